"""train.checkpoint.Checkpointer: checksums, step check, finite-only saves, one-line errors.

Small hand-made states (no model, nothing compiled): the optimizer state's layout does not
matter to the checkpointer, only the pytree of host arrays.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import shutil
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from train.checkpoint import Checkpointer, CheckpointError

CONFIG = {"model": "gpt2", "model_size": "tiny", "seq_len": 32}


def make_state(step: int, seed: int = 0) -> dict:
    r = np.random.default_rng(seed)
    return {"step": np.asarray(step, np.int32),
            "params": {"w": r.normal(size=(64, 64)).astype(np.float32),
                       "b": r.normal(size=(64,)).astype(np.float32)},
            "opt_state": {"count": np.asarray(step, np.int32),
                          "nu": (r.normal(size=(64, 64)) ** 2 * 1e-6).astype(np.float32)}}


def saved(directory: str, *steps: int) -> Checkpointer:
    ck = Checkpointer(directory, keep=10)
    for s in steps:
        ck.save(s, make_state(s, seed=s), CONFIG)
    ck.wait()
    return ck


def _data_files(step_dir: str) -> list[str]:
    out = []
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        if os.path.basename(root) == "d":
            out += [os.path.join(root, f) for f in files]
    return out


def test_round_trip(tmp_path) -> None:
    ck = saved(str(tmp_path / "c"), 3)
    out = ck.restore(3, make_state(0), CONFIG)
    for a, b in zip(np.asarray(out["params"]["w"]).ravel()[:5], make_state(3, 3)["params"]["w"]
                    .ravel()[:5]):
        assert a == b
    ck.close()


def test_one_flipped_bit_is_caught_and_named(tmp_path) -> None:
    d = str(tmp_path / "c")
    ck = saved(d, 3)
    ref = make_state(3, seed=3)
    big = max(_data_files(os.path.join(d, "3")), key=os.path.getsize)
    with open(big, "r+b") as f:  # one bit in the middle of the largest data file
        f.seek(os.path.getsize(big) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x04]))
    # the premise: orbax alone restores it without a word, one or a few values changed
    raw = ocp.StandardCheckpointer().restore(os.path.join(d, "3", "state"), ref)
    changed = [k for k in ("w", "b") if not np.array_equal(raw["params"][k], ref["params"][k])]
    changed += ["nu"] if not np.array_equal(raw["opt_state"]["nu"], ref["opt_state"]["nu"]) else []
    assert len(changed) == 1
    with pytest.raises(CheckpointError) as e:
        ck.restore(3, make_state(0), CONFIG)
    msg = str(e.value)
    assert f"{d}/3" in msg and "corrupted" in msg and "\n" not in msg
    leaf = {"w": "params/w", "b": "params/b", "nu": "opt_state/nu"}[changed[0]]
    assert f"leaf {leaf} " in msg
    ck.close()


def test_a_step_directory_holding_another_steps_state_is_refused(tmp_path) -> None:
    d = str(tmp_path / "c")
    saved(d, 3).close()
    shutil.copytree(os.path.join(d, "3"), os.path.join(d, "6"))  # "6" holds step 3's state
    ck = Checkpointer(d, keep=10)
    assert ck.latest_step() == 6
    with pytest.raises(CheckpointError, match=r"/6 holds the state of step 3, not 6"):
        ck.restore(6, make_state(0), CONFIG)
    assert int(ck.restore(3, make_state(0), CONFIG)["step"]) == 3
    ck.close()


def test_non_finite_or_mislabelled_states_are_never_saved(tmp_path) -> None:
    d = str(tmp_path / "c")
    ck = Checkpointer(d, keep=10)
    bad = make_state(4)
    bad["opt_state"]["nu"][3, 5] = np.nan
    # the writer thread refuses it; the refusal surfaces at the next save or wait at the latest,
    # and nothing after it is written (a later save raises the same error)
    with pytest.raises(CheckpointError, match=r"/4: opt_state/nu has 1 non-finite value"):
        ck.save(4, bad, CONFIG)
        ck.wait()
    with pytest.raises(CheckpointError, match=r"/4: opt_state/nu has 1 non-finite value"):
        ck.save(5, make_state(5, seed=5), CONFIG)
    ck2 = Checkpointer(str(tmp_path / "c2"), keep=10)
    with pytest.raises(CheckpointError, match=r"state is at step 4"):
        ck2.save(5, make_state(4), CONFIG)
    ck.close()  # reported already: not raised again
    ck2.close()
    assert ck.all_steps() == [] and ck2.all_steps() == []
    # never waited for: close reports it, once
    ck3 = Checkpointer(str(tmp_path / "c3"), keep=10)
    ck3.save(4, bad, CONFIG)
    with pytest.raises(CheckpointError, match=r"/4: opt_state/nu has 1 non-finite value"):
        ck3.close()
    assert ck3.all_steps() == []


def test_disk_full_before_writing_is_one_line(tmp_path, monkeypatch) -> None:
    import train.checkpoint as mod

    d = str(tmp_path / "c")
    ck = Checkpointer(d, keep=10)
    real = shutil.disk_usage
    monkeypatch.setattr(mod.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=10_000))  # a nearly full disk
    with pytest.raises(CheckpointError) as e:
        ck.save(2, make_state(2), CONFIG)
    msg = str(e.value)
    assert msg.startswith(f"cannot write checkpoint {d}/2: No space left on device (errno 28")
    assert "\n" not in msg
    ck.close()  # the failure was reported once; closing does not raise it again
    assert Checkpointer(d, keep=10).all_steps() == []


def test_a_write_failing_midway_is_one_line_without_tracebacks(tmp_path, monkeypatch,
                                                               caplog, capfd) -> None:
    # a write inside orbax's asynchronous save fails with ENOSPC (as a full disk does)
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh

    async def full(self, x, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(jh.JsonCheckpointHandler, "_save_fn", full)
    d = str(tmp_path / "c")
    ck = Checkpointer(d, keep=10)
    caplog.set_level(logging.ERROR)
    with pytest.raises(CheckpointError) as e:
        ck.save(2, make_state(2), CONFIG)
        ck.wait()  # the asynchronous failure surfaces here at the latest
    msg = str(e.value)
    assert msg == (f"cannot write checkpoint {d}/2: No space left on device (errno 28, "
                   "ENOSPC)"), msg
    ck.close()  # reported once
    assert not [r for r in caplog.records if r.exc_info], "orbax's traceback logs leak"
    assert "Traceback" not in capfd.readouterr().err
    assert Checkpointer(d, keep=10).all_steps() == []


def test_the_loop_waits_for_neither_the_checks_nor_the_write(tmp_path, monkeypatch) -> None:
    """Issue 28: ``save`` of host arrays returns while the checksums are not even started; they
    and orbax's write run in the writer thread, at a lower priority (Linux), before the
    commit: nothing is committed until they are done."""
    import threading

    import train.checkpoint as mod

    release, seen = threading.Event(), []
    real = mod.leaf_checksums

    def held(tree, **kw):
        tid = threading.get_native_id()
        seen.append((tid, os.getpriority(os.PRIO_PROCESS, tid) if sys.platform == "linux"
                     else None))
        assert release.wait(60)
        return real(tree, **kw)

    monkeypatch.setattr(mod, "leaf_checksums", held)
    d = str(tmp_path / "c")
    ck = Checkpointer(d, keep=10)
    ck.save(3, make_state(3, seed=3), CONFIG)
    ck.save(4, make_state(4, seed=4), CONFIG)  # queued behind 3, the loop still not waiting
    assert ck.saving() and ck.all_steps() == []
    release.set()
    ck.wait()
    assert not ck.saving() and ck.all_steps() == [3, 4]
    assert len(seen) == 2 and seen[0][0] != threading.get_native_id()
    if sys.platform == "linux":
        assert seen[0][1] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + mod.WRITER_NICE)
    out = ck.restore(4, make_state(0), CONFIG)
    np.testing.assert_array_equal(out["opt_state"]["nu"], make_state(4, seed=4)["opt_state"]["nu"])
    ck.close()


def test_garbage_data_is_one_short_line(tmp_path, monkeypatch) -> None:
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    d = str(tmp_path / "c")
    ck = saved(d, 3)
    for p in _data_files(os.path.join(d, "3")):
        with open(p, "r+b") as f:
            f.write(b"\x00garbage\x00" * 4)
    with pytest.raises(CheckpointError, match="corrupted") as e:
        ck.restore(3, make_state(0), CONFIG)
    msg = str(e.value)
    assert "\n" not in msg and "tensorstore_spec" not in msg and len(msg) < 700
    ck.close()
    time.sleep(0.5)  # tensorstore's threads finish the reads orbax abandoned
    gc.collect()
    assert not unraisable, [str(u.exc_value) for u in unraisable]  # no late tracebacks


# -- sharded global arrays (the mesh engine): no host gather, any layout ------------------------


def _mesh(shape: tuple, names: tuple):
    import jax
    from jax.sharding import Mesh

    n = int(np.prod(shape))
    return Mesh(np.array(jax.devices()[:n]).reshape(shape), names)


def _place(state: dict, mesh, specs: dict) -> dict:
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), state, specs,
                        is_leaf=lambda s: isinstance(s, PartitionSpec))


def _specs(w, b, nu) -> dict:
    from jax.sharding import PartitionSpec as P

    return {"step": P(), "params": {"w": w, "b": b}, "opt_state": {"count": P(), "nu": nu}}


def test_sum32_is_the_same_on_the_host_and_on_any_layout_and_sees_one_bit() -> None:
    """The checksum of a leaf is a function of its global values only: NumPy on the host array
    and XLA on the shards of every layout agree exactly (integer addition modulo 2^32), for
    float32, bfloat16, int32 and bool; flipping any one bit of any one element changes it."""
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from train.checkpoint import leaf_checksums, sum32

    st = make_state(5, seed=1)
    st["params"]["b"] = st["params"]["b"].astype(jnp.bfloat16)
    st["opt_state"]["mask"] = np.arange(64) % 3 == 0
    host = leaf_checksums(st)
    layouts = [(_mesh((8,), ("d",)), _specs(P("d"), P(), P(None, "d"))),
               (_mesh((2, 4), ("d", "t")), _specs(P("d", "t"), P("t"), P(("d", "t")))),
               (_mesh((4, 2), ("d", "t")), _specs(P("t", "d"), P(("t", "d")), P()))]
    for mesh, specs in layouts:
        specs["opt_state"]["mask"] = P(mesh.axis_names[0])
        dev = _place(st, mesh, specs)
        assert leaf_checksums(dev, check_finite=True) == host
    r = np.random.default_rng(0)
    for a in (st["params"]["w"], st["params"]["b"], st["opt_state"]["count"]):
        for _ in range(20):
            flat = a.copy().reshape(-1)
            bits = flat.view({4: np.uint32, 2: np.uint16}[flat.dtype.itemsize])
            k, bit = r.integers(flat.size), r.integers(8 * flat.dtype.itemsize)
            bits[k] ^= bits.dtype.type(1 << int(bit))
            assert sum32(flat.reshape(a.shape)) != sum32(a)


def test_sum32_of_leaves_longer_than_a_chunk() -> None:
    """The host checksum hashes a leaf in cache-sized chunks: on leaves of several chunks (and
    a partial last one) it equals the whole-array formula (written out here in NumPy) and the
    XLA twin; the host finite check counts non-finite values in every chunk, bfloat16 too."""
    import jax
    import jax.numpy as jnp
    import ml_dtypes

    from train.checkpoint import _CHUNK, _K1, _K2, _K3, _K4, _jnp_sum32, leaf_checksums, sum32

    def whole(a: np.ndarray) -> int:
        u = np.ascontiguousarray(a).reshape(-1)
        u = u.view(np.uint32) if u.dtype.itemsize == 4 else u.view(np.uint16).astype(np.uint32)
        with np.errstate(over="ignore"):
            h = u * np.uint32(_K1) + np.arange(u.size, dtype=np.uint32) * np.uint32(_K2)
            for shift, k in ((16, _K3), (15, _K4)):
                h ^= h >> np.uint32(shift)
                h *= np.uint32(k)
            h ^= h >> np.uint32(16)
        return int(h.sum(dtype=np.uint32))

    r = np.random.default_rng(5)
    n = 3 * _CHUNK + 17
    for a in (r.standard_normal(n).astype(np.float32).reshape(-1, 1),
              r.standard_normal(n).astype(ml_dtypes.bfloat16), r.integers(-9, 9, n, np.int32)):
        assert sum32(a) == whole(a) == int(jax.jit(_jnp_sum32)(jnp.asarray(a)))
    for dt in (np.float32, ml_dtypes.bfloat16):
        a = r.standard_normal(n).astype(dt)
        a[[3, _CHUNK, 2 * _CHUNK + 1, n - 1]] = [np.nan, np.inf, -np.inf, np.nan]
        with pytest.raises(CheckpointError, match=r"w has 4 non-finite value\(s\)"):
            leaf_checksums({"w": a}, check_finite=True)


def test_sharded_state_is_checked_on_device_and_restores_onto_any_layout(tmp_path) -> None:
    """A state of sharded ``jax.Array`` s is saved as it is (its checksums those of the host
    copy), restored onto another layout (the target's shardings) and onto the host,
    bit-identical both; a NaN in one shard is refused before saving, naming the leaf; a flipped
    bit is caught when restoring onto a sharded target."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    d = str(tmp_path / "c")
    ck = Checkpointer(d, keep=10)
    st = make_state(3, seed=3)
    src = _place(st, _mesh((2, 4), ("d", "t")), _specs(P("d", "t"), P("t"), P(None, "d")))
    bad = _place({**st, "opt_state": {**st["opt_state"], "nu": np.where(
        np.arange(64)[:, None] == 60, np.inf, st["opt_state"]["nu"]).astype(np.float32)}},
        _mesh((8,), ("d",)), _specs(P(), P(), P("d")))  # the inf lives on the last device
    with pytest.raises(CheckpointError, match=r"/3: opt_state/nu has 64 non-finite value"):
        ck.save(3, bad, CONFIG)
    ck.save(3, src, CONFIG)
    ck.wait()
    to = _mesh((8,), ("x",))
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(to, s)), st,
        _specs(P(None, "x"), P("x"), P("x")), is_leaf=lambda s: isinstance(s, P))
    got = ck.restore(3, target, CONFIG)
    assert got["params"]["w"].sharding == target["params"]["w"].sharding
    assert got["params"]["w"].addressable_shards[0].data.shape == (64, 8)  # only its shard
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(st)):
        np.testing.assert_array_equal(np.asarray(x), y)
    host = ck.restore(3, make_state(0), CONFIG)
    for x, y in zip(jax.tree.leaves(host), jax.tree.leaves(st)):
        assert isinstance(x, np.ndarray)
        np.testing.assert_array_equal(x, y)
    big = max(_data_files(os.path.join(d, "3")), key=os.path.getsize)
    with open(big, "r+b") as f:
        f.seek(os.path.getsize(big) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(CheckpointError, match=r"corrupted: leaf .* does not match its checksum "
                                              r"\(sum32"):
        ck.restore(3, target, CONFIG)
    ck.close()
