"""The W&B tracker, offline: what it writes is read back from the run file W&B itself writes
(its records are W&B's own protobuf messages in a LevelDB-style log), not from our calls."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys

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
    recs = read_wandb_file(files[0])
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
