"""Weight I/O shared by the models: a dependency-free safetensors reader/writer (the
``safetensors`` package is only a test extra) and the HF state-dict <-> params conversion driven
by each model's ``hf_mapping`` rows."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .common import PARAM_DTYPE

_ST_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,  # ml_dtypes.bfloat16
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into numpy arrays (memory-mapped, no copy)."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(raw[:8]))
    header = json.loads(bytes(raw[8 : 8 + n]).decode("utf-8"))
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = np.dtype(_ST_DTYPES[info["dtype"]])
        out[name] = raw[base + begin : base + end].view(dtype).reshape(info["shape"])
    return out


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: dict | None = None
) -> None:
    """Write numpy arrays as a ``.safetensors`` file (readable by ``safetensors``/HF)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    arrays, offset = [], 0
    for name, value in tensors.items():
        a = np.asarray(value)
        if a.dtype.byteorder == ">":
            a = a.byteswap().view(a.dtype.newbyteorder("<"))
        a = np.require(a, requirements="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        header[name] = {
            "dtype": _ST_NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        arrays.append(a)
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            f.write(a.tobytes())


def to_numpy_f32(x: Any) -> np.ndarray:
    """numpy / torch / jax array -> float32 numpy array (torch is duck-typed, not imported)."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def load_state_dict(path_or_state_dict: Any) -> dict[str, Any]:
    """A state dict from a mapping, a ``.safetensors`` file or a directory of them."""
    if isinstance(path_or_state_dict, Mapping):
        return dict(path_or_state_dict)
    path = os.fspath(path_or_state_dict)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors files in directory {path!r}")
        sd: dict[str, Any] = {}
        for f in files:
            sd.update(read_safetensors(os.path.join(path, f)))
        return sd
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return read_safetensors(path)


def check_tied_head(cls: str, state_dict: Mapping[str, Any], head: str, embedding: str,
                    hint: str) -> None:
    """For a config whose output head is tied to the embedding: a ``head`` present in the state
    dict must equal ``embedding`` (what tied checkpoints hold), else ``ValueError`` (loading
    would silently replace the checkpoint's head by the embedding)."""
    if head not in state_dict or embedding not in state_dict:
        return
    h, e = to_numpy_f32(state_dict[head]), to_numpy_f32(state_dict[embedding])
    if h.shape == e.shape and np.array_equal(h, e):
        return
    what = (f"max |difference| {float(np.max(np.abs(h - e))):.3g}" if h.shape == e.shape
            else f"shape {h.shape} vs {e.shape}")
    raise ValueError(f"{cls}: {head} differs from {embedding} ({what}) but this config ties the "
                     f"output head to the embedding, so the checkpoint's head would be dropped; "
                     f"{hint}")


def convert_from_hf(
    cls: str,
    mapping: list[tuple[str, tuple[str, ...], bool]],
    state_dict: Mapping[str, Any],
    expected: Any,
    ignore: tuple[str, ...] = (),
) -> dict:
    """Build a params pytree from an HF state dict.

    ``mapping`` rows are (hf_name, params_path, transpose). ``expected`` is the params pytree
    of shapes (from ``jax.eval_shape``). Unknown keys (except those ending in ``ignore``),
    missing keys and shape mismatches raise ``ValueError``.
    """
    shapes = {
        tuple(p.key for p in path): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(expected)
    }
    known = {hf for hf, _, _ in mapping}
    extra = [k for k in state_dict if k not in known and not k.endswith(ignore)]
    if extra:
        raise ValueError(f"{cls}: unexpected keys in state dict: {sorted(extra)[:10]}")
    missing = [hf for hf, _, _ in mapping if hf not in state_dict]
    if missing:
        raise ValueError(f"{cls}: missing keys in state dict: {missing[:10]}")
    params: dict = {}
    for hf, path, transpose in mapping:
        a = to_numpy_f32(state_dict[hf])
        if transpose:
            a = a.T
        if a.shape != tuple(shapes[path]):
            raise ValueError(
                f"{cls}: {hf} has shape {a.shape} (after layout change), expected "
                f"{tuple(shapes[path])} for config"
            )
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(a, dtype=PARAM_DTYPE)
    return params


def convert_to_hf(
    mapping: list[tuple[str, tuple[str, ...], bool]], params: Any
) -> dict[str, np.ndarray]:
    """Inverse of :func:`convert_from_hf`: params pytree -> {hf_name: float32 ndarray}."""
    out = {}
    for hf, path, transpose in mapping:
        node = params
        for key in path:
            node = node[key]
        a = np.asarray(node, dtype=np.float32)
        out[hf] = np.ascontiguousarray(a.T if transpose else a)
    return out


def save_state_dict(path: str | os.PathLike, sd: dict[str, np.ndarray], hf_cfg: dict) -> str:
    """Write ``sd`` as safetensors. A ``*.safetensors`` path is written as that file;
    any other path is a directory receiving ``model.safetensors`` and ``config.json``
    (so ``transformers`` ``from_pretrained(path)`` can load it). Returns the file written."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        write_safetensors(path, sd)
        return path
    os.makedirs(path, exist_ok=True)
    file = os.path.join(path, "model.safetensors")
    write_safetensors(file, sd)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    return file
