"""``Engine.place_batch`` (issue 25): the loop's prefetch thread puts each step's batch on the
devices ahead of the step. The placed batch holds the host batch's tokens, in the layout the
pmapped step takes (no copy, no second compilation), trains to the same state bit for bit as the
host batch, and the prefetched stream is the Batcher's, from any start step (a resume)."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import models
from train import TrainConfig, build_schedule
from train.data import Batcher, Prefetcher
from train.engine.pmap import pmap_engine, replicate
from train.engine.step import AXIS, Placed
from train.run.loop import PREFETCH_DEPTH
from train.shards import TokenData

SEQ, B = 16, 2


@pytest.fixture(scope="module")
def run():
    devices = jax.local_devices()[:1]
    cfg = TrainConfig(model="gpt2", model_size="tiny", devices=1, steps=10, batch_size=B,
                      seq_len=SEQ, tensorboard=False)
    mcfg = models.get_config("gpt2", cfg.base_size(), vocab_size=256, **cfg.model_overrides())
    params = jax.device_get(models.init_params(mcfg, jax.random.key(0)))
    eng = pmap_engine(mcfg, cfg, build_schedule(cfg), params, devices)
    tokens = np.random.default_rng(1).integers(0, 256, size=5000).astype(np.uint16)
    batcher = Batcher(TokenData([tokens], "train"), SEQ, B, 1, 1, seed=3)

    def fresh():
        return replicate({"step": np.zeros((), np.int32), "params": params,
                          "opt_state": jax.device_get(eng.tx.init(params))}, devices)

    return eng, batcher, fresh, devices


def test_placed_batch_is_the_host_batch_in_the_steps_layout(run) -> None:
    eng, batcher, _, devices = run
    host = batcher.batch(4)
    placed = eng.place_batch(host)
    assert isinstance(placed, Placed) and placed.shape == host.shape
    np.testing.assert_array_equal(np.asarray(placed.array), host)
    # pmap is a shard_map over Mesh(devices, (AXIS,)) taking its argument split on axis 0
    assert placed.array.sharding == NamedSharding(Mesh(np.array(devices), (AXIS,)),
                                                  PartitionSpec(AXIS))
    assert eng.place_batch(placed) is placed  # placing twice is a no-op


def test_training_on_placed_batches_equals_host_batches(run) -> None:
    eng, batcher, fresh, _ = run
    a, b = fresh(), fresh()
    for t in range(3):
        a, ma = eng.train(a, batcher.batch(t))
        b, mb = eng.train(b, eng.place_batch(batcher.batch(t)))
        assert float(ma["loss"][0]) == float(mb["loss"][0])
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))


def test_prefetched_placed_stream_is_the_batchers_from_any_start(run) -> None:
    eng, batcher, _, _ = run
    with Prefetcher(batcher.batch, start=5, depth=PREFETCH_DEPTH, place=eng.place_batch) as p:
        got = {t: np.asarray(p.get(t).array) for t in (5, 6, 7)}
        got[2] = np.asarray(p.get(2).array)  # out of order (a resume at 2): restarts there
        got[3] = np.asarray(p.get(3).array)
    for t, x in got.items():
        np.testing.assert_array_equal(x, batcher.batch(t), err_msg=f"step {t}")


def test_a_wrong_batch_fails_at_placing_naming_the_shape(run) -> None:
    eng, _, _, _ = run
    bad = np.zeros((1, 1, B, 5 * SEQ), np.int32)  # longer than the model's context
    with Prefetcher(lambda t: bad, place=eng.place_batch) as p, pytest.raises(
            AssertionError, match=r"\[replicas, grad_accum, B, T\+1\]"):
        p.get(0)
