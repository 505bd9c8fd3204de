"""Mixed precision end to end: float16 with dynamic loss scaling, bfloat16 without.

Parameters and optimizer state stay float32 (master weights); the model computes in the given
dtype. float16 runs on XLA:CPU too (its float32-accumulated products run in float32 there).
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from train_testutil import tiny

from train import TrainConfig, build_schedule
from train import train_and_evaluate as run


def _records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics", "metrics.jsonl")) as f:
        return [json.loads(x) for x in f if '"loss"' in x]


def _state(workdir: str, step: int) -> dict:
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                           "state"))


@pytest.fixture(scope="module")
def f16(tmp_path_factory, corpus):
    """6 float16 steps from a loss scale so large that the first gradients overflow."""
    tmp = str(tmp_path_factory.mktemp("f16"))
    cfg = tiny(tmp, corpus, dtype="float16", loss_scale_init=2.0**18, loss_scale_growth_interval=2,
               eval_interval=100)
    s = run(cfg, os.path.join(tmp, "run"))
    return tmp, cfg, s


def test_float16_skips_overflowing_steps_without_moving_the_schedule(f16) -> None:
    tmp, cfg, s = f16
    recs = _records(os.path.join(tmp, "run"))
    assert [r["step"] for r in recs] == list(range(6))
    skipped = [bool(r["skipped"]) for r in recs]
    assert any(skipped) and not all(skipped), skipped  # both branches happen
    sched = build_schedule(TrainConfig.from_dict(cfg))
    count = 0  # the optimizer's step count: advances only on applied updates
    for t, r in enumerate(recs):
        assert r["lr"] == pytest.approx(sched(count), rel=1e-6), t
        assert np.isfinite(r["loss"])
        if t + 1 < len(recs):
            nxt = recs[t + 1]
            if r["skipped"]:  # the lr does not advance; the scale halves
                assert nxt["lr"] == r["lr"] and nxt["loss_scale"] == r["loss_scale"] / 2
            else:
                assert nxt["lr"] != r["lr"]
        count += not r["skipped"]
    # the checkpoint holds the float32 master state, the optimizer's count and the scaler
    state = _state(os.path.join(tmp, "run"), 6)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state["params"]))
    counts = {int(x) for x in jax.tree.leaves(state["opt_state"]) if np.ndim(x) == 0}
    assert counts == {count}
    assert float(state["loss_scale"]["scale"]) in {recs[-1]["loss_scale"] * f
                                                   for f in (0.5, 1.0, 2.0)}
    assert s["final_loss"] < s["first_loss"]


def test_float16_resume_is_exact(f16) -> None:
    tmp, cfg, ref = f16
    wd = os.path.join(tmp, "resumed")
    shutil.copytree(os.path.join(tmp, "run"), wd)
    shutil.rmtree(os.path.join(wd, "checkpoints", "6"))  # back to checkpoint 3
    s = run({**cfg, "resume": True}, wd)
    assert s["start_step"] == 3
    assert dict(s["losses"]) == {t: x for t, x in ref["losses"] if t >= 3}
    a, b = _state(wd, 6), _state(os.path.join(tmp, "run"), 6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)  # params, optimizer state and loss scale


def test_bfloat16_tracks_float32(tmp_path, corpus) -> None:
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 ~ 0.2%) in the activations and
    # matmul inputs, float32 master weights and float32 loss: over a few steps the loss stays
    # within 1% (relative) of float32's (docs/training.md, "Mixed precision").
    cfg = tiny(str(tmp_path), corpus, steps=4, eval_interval=100, checkpoint_interval=100)
    bf = run({**cfg, "dtype": "bfloat16"}, str(tmp_path / "bf16"))
    f32 = run(cfg, str(tmp_path / "f32"))
    a, b = np.array([x for _, x in bf["losses"]]), np.array([x for _, x in f32["losses"]])
    np.testing.assert_allclose(a, b, rtol=1e-2)
    assert a[-1] < a[0] - 0.3  # and it learns
    assert "loss_scale" not in _records(str(tmp_path / "bf16"))[0]  # no scaling for bfloat16
    st = _state(str(tmp_path / "bf16"), 4)
    assert "loss_scale" not in st
