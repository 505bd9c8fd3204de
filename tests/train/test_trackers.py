"""The W&B tracker, offline: what it writes is read back from the run file W&B itself writes
(its records are W&B's own protobuf messages in a LevelDB-style log), not from our calls."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys

import numpy as np
import pytest

wandb = pytest.importorskip("wandb")

from train.trackers import WandbTracker, read_run_id  # noqa: E402


def read_wandb_file(path: str) -> list:
    """The records of a ``run-*.wandb`` file (``wandb_internal_pb2.Record``): a header
    ``:W&B``, then 32 KiB blocks of records ``(crc32, length, type)`` + data, a record split
    over blocks as FIRST / MIDDLE / LAST pieces."""
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, (ident, magic)
    block, pos, out, buf = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer: padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            out.append(buf + chunk)
    recs = []
    for raw in out:
        r = pb.Record()
        r.ParseFromString(raw)
        recs.append(r)
    return recs


def _complete(path: str, timeout_s: float = 60.0) -> list:
    """The records of a run file once W&B's service has written its ``exit`` record (the
    service writes the file asynchronously: ``finish`` may return before it is flushed)."""
    import time

    end = time.monotonic() + timeout_s
    while True:
        recs = read_wandb_file(path)
        if (recs and recs[-1].WhichOneof("record_type") == "exit") or time.monotonic() > end:
            return recs
        time.sleep(0.2)


def _history(recs: list) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                   for i in r.history.item}
            step = int(row.get("_step", r.history.step.num))
            rows.setdefault(step, {}).update(row)
    return rows


def _config(recs: list) -> dict:
    cfg: dict = {}
    for r in recs:
        kind = r.WhichOneof("record_type")
        items = (r.run.config.update if kind == "run" else
                 r.config.update if kind == "config" else [])
        for i in items:
            cfg[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return cfg


def test_offline_run_holds_config_metrics_and_resumes(tmp_path) -> None:
    wd = str(tmp_path)
    t = WandbTracker(wd, project="schedax-test", name="r", mode="offline")
    t.start({"lr": 0.003, "schedule_spec": "cosine(0.003, 0.0, 100)"})
    for step, loss in enumerate([4.0, 3.5, 3.25]):
        t.log(step, {"loss": loss, "lr": 0.003 * (step + 1), "tokens_per_s": None})
    t.table("lr_curve", ["step", "lr"], [[0, 0.003], [1, 0.006]])
    t.summary({"final_loss": 3.25})
    t.finish()
    rid = read_run_id(wd)
    files = glob.glob(os.path.join(wd, "wandb", "offline-run-*", f"run-{rid}.wandb"))
    assert rid and len(files) == 1, (rid, os.listdir(os.path.join(wd, "wandb")))
    recs = _complete(files[0])
    cfg = _config(recs)
    assert cfg["lr"] == 0.003 and cfg["schedule_spec"].startswith("cosine")
    hist = _history(recs)
    assert [hist[s]["loss"] for s in range(3)] == [4.0, 3.5, 3.25]
    assert hist[2]["lr"] == 0.003 * 3 and "tokens_per_s" not in hist[0]
    # a resumed run continues the same W&B run
    t2 = WandbTracker(wd, project="schedax-test", name="r", mode="offline")
    t2.start({"lr": 0.003})
    t2.log(3, {"loss": 3.0})
    t2.finish()
    assert read_run_id(wd) == rid


def test_missing_package_and_failing_tracker(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ValueError, match=r"pip install 'schedax\[wandb\]'"):
        WandbTracker(str(tmp_path), project="p")
    monkeypatch.undo()
    warned: list[str] = []
    t = WandbTracker(str(tmp_path), project="p", mode="disabled", warn=warned.append)
    t.start({})

    class Broken:
        def log(self, *a, **k):
            raise OSError("disk full")

    t.run = Broken()
    t.log(0, {"loss": 1.0})
    t.log(1, {"loss": 1.0})  # switched off after the first failure: one warning
    assert len(warned) == 1 and "disk full" in warned[0] and "training goes on" in warned[0]


def _summary(recs: list) -> dict:
    out: dict = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            for i in r.summary.update:
                out[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return out


def _tensorboard(directory: str) -> tuple[dict[str, dict[int, float]], dict[str, str]]:
    """``(scalars {tag: {step: value}}, texts {tag: text})`` of the event files in
    ``directory``: TFRecords (length, its crc, an ``Event`` protobuf, its crc)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = {}
    texts: dict[str, str] = {}
    for path in glob.glob(os.path.join(directory, "**", "events.out.tfevents.*"),
                          recursive=True):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in ev.summary.value:
                if v.HasField("tensor") and v.tensor.string_val:
                    texts[v.tag] = v.tensor.string_val[0].decode()
                elif v.HasField("simple_value") or v.WhichOneof("value") == "simple_value":
                    scalars.setdefault(v.tag, {})[ev.step] = v.simple_value
    return scalars, texts


def _jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_a_training_run_is_tracked_and_its_resume_continues_the_same_run(
        tmp_path, corpus, monkeypatch, capsys) -> None:
    """``python -m train --tracker=wandb --wandb-mode=offline``, then ``--resume`` to a longer
    run: W&B's own run files hold the full effective config the checkpoint saved, the lr
    curve the schedule gives (a table), every record of metrics.jsonl at its step (train
    metrics and evaluation losses, step 0 included) and the final sample; the resume
    appends to the same W&B run id."""
    from train_testutil import tiny

    from train import TrainConfig
    from train import train_and_evaluate as run
    from train.__main__ import main

    for k in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(k, str(tmp_path / k.lower()))
    wd = str(tmp_path / "run")
    cfg = tiny(str(tmp_path), corpus, n_head=2, n_embd=32, seq_len=16, batch_size=1,
               total_steps=6, eval_interval=2, checkpoint_interval=2, sample_tokens=4,
               devices=1)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items() if k != "tensorboard"]
    flags.append("--tensorboard")
    assert main([*flags, "--workdir", wd, "--steps=3", "--tracker=wandb,tensorboard",
                 "--wandb-mode=offline", "--wandb-project=schedax-test",
                 "--wandb-run-name=r1"]) == 0
    second = run({"resume": True, "steps": 5}, wd)
    capsys.readouterr()

    rid = read_run_id(wd)
    files = sorted(glob.glob(os.path.join(wd, "wandb", "offline-run-*", "run-*.wandb")))
    assert rid and [os.path.basename(f) for f in files] == [f"run-{rid}.wandb"] * 2, files
    first, resumed = (_complete(f) for f in files)
    assert [r.run.run_id for r in first + resumed if r.WhichOneof("record_type") == "run"
            ] == [rid, rid]

    with open(os.path.join(wd, "checkpoints", "3", "config", "metadata")) as f:
        saved = json.load(f)  # the effective config the checkpoint holds
    tracked = _config(first)
    assert set(TrainConfig.field_names()) - {"resume", "overwrite"} <= set(tracked)
    for k in ("schedule_spec", "model_config", "tokens_per_step", "lr", "tracker"):
        assert tracked[k] == json.loads(json.dumps(saved[k])), k

    # the lr curve: a W&B table file, the schedule's values for updates 0..steps-1
    (table,) = glob.glob(os.path.join(os.path.dirname(files[0]), "files", "media", "table",
                                      "lr_curve_*.table.json"))
    with open(table) as f:
        t = json.load(f)
    assert t["columns"] == ["step", "lr"] and [r[0] for r in t["data"]] == [0, 1, 2]

    # every metrics.jsonl record at its step; the lr applied (float32) is the curve's value
    records = _jsonl(os.path.join(wd, "metrics", "metrics.jsonl"))
    hist = _history(first + resumed)  # step 3: the first run's final eval, the resume's update
    assert [r["step"] for r in records if "loss" in r] == [0, 1, 2, 3, 4]
    for r in records:
        row = hist[r["step"]]
        for k, v in r.items():
            if k != "step" and v is not None:
                assert row[k] == v, (r["step"], k, row.get(k), v)
    assert {r["step"] for r in records if "val_loss" in r} == {2, 3, 4, 5}  # every 2 and at the end
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    for s, want in t["data"]:
        np.testing.assert_allclose(lr[s], want, rtol=2 ** -23)

    assert _summary(first)["sample"] and _summary(resumed)["sample"] == second["sample"]

    # TensorBoard: the same curve, the config and schedule as text, the final sample
    scalars, texts = _tensorboard(os.path.join(wd, "metrics", "tb"))
    np.testing.assert_allclose([scalars["schedule/lr"][s] for s in range(3)],
                               [lr for _, lr in t["data"]], rtol=2 ** -23)
    assert scalars["train/loss"] == pytest.approx(
        {r["step"]: r["loss"] for r in records if "loss" in r}, rel=2 ** -23)
    assert saved["schedule_spec"] in texts["schedule/text_summary"]
    assert json.loads(texts["config/text_summary"].strip("`\n"))["lr"] == saved["lr"]
    assert texts["sample/text_summary"] == second["sample"]
    assert _summary(resumed)["steps"] == 5 and _summary(resumed)["start_step"] == 3

    # --overwrite starts over: a new W&B run (the old one's files stay, for `wandb sync`)
    from train.run.setup import prepare_run

    prepare_run(TrainConfig.from_dict({**cfg, "overwrite": True}), wd, "plan")
    assert read_run_id(wd) is None and os.path.exists(files[0])


def test_cli_without_wandb_says_which_extra_to_install(tmp_path, monkeypatch, capsys) -> None:
    from train.__main__ import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SystemExit) as e:
        main(["--workdir", str(tmp_path), "--tracker=tensorboard,wandb"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 2, err
    assert err.splitlines()[0] == ("python -m train: error: --tracker=wandb needs the wandb "
                                   "package: pip install 'schedax[wandb]'"), err
    assert os.listdir(tmp_path) == []  # refused before anything is written
