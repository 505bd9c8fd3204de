"""transformers checkpoint folders in and out: ``config.json`` + ``model.safetensors`` (or a
sharded ``model.safetensors.index.json``) -> (config, params), and (config, params) -> a folder
that ``AutoModelForCausalLM.from_pretrained`` loads, written atomically.

Every problem with a folder is one ``ValueError`` line naming the folder (or file) and the rule.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .api import Config, config_from_hf, family, from_hf, hf_config, to_hf
from .hf_io import read_safetensors, write_safetensors

#: transformers architectures this package reads, by ``config.json`` ``model_type``
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
#: the embedding of each architecture (whose rows are the vocabulary)
_EMBEDDINGS = ("transformer.wte.weight", "wte.weight", "model.embed_tokens.weight")
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder, checked to be a supported architecture."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a directory (expected a transformers checkpoint folder)")
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise ValueError(f"{path}: no config.json (not a transformers checkpoint folder)")
    try:
        with open(file) as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: unreadable ({e})") from None
    archs = d.get("architectures") or [ARCHITECTURES.get(d.get("model_type"), "?")]
    supported = set(ARCHITECTURES.values())
    if d.get("model_type") not in ARCHITECTURES or not set(archs) <= supported:
        raise ValueError(f"{file}: unsupported architecture {archs[0]!r} (model_type="
                         f"{d.get('model_type')!r}); supported: {sorted(supported)}")
    return d


def read_hf_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state dict of a checkpoint folder: ``model.safetensors``, or the shards named by
    ``model.safetensors.index.json`` (memory-mapped)."""
    path = os.fspath(path)
    single, index = os.path.join(path, WEIGHTS), os.path.join(path, INDEX)
    if os.path.isfile(single):
        return read_safetensors(single)
    if not os.path.isfile(index):
        raise ValueError(f"{path}: no weights ({WEIGHTS} or {INDEX})")
    try:
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: unreadable index ({type(e).__name__}: {e})") from None
    sd: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        file = os.path.join(path, shard)
        if not os.path.isfile(file):
            raise ValueError(f"{index}: shard {shard!r} is missing")
        tensors = read_safetensors(file)
        sd.update({k: v for k, v in tensors.items() if weight_map.get(k) == shard})
    missing = sorted(set(weight_map) - set(sd))
    if missing:
        raise ValueError(f"{index}: {len(missing)} tensors not in their shards, e.g. "
                         f"{missing[0]!r}")
    return sd


def load_hf_checkpoint(path: str | os.PathLike, vocab_size: int | None = None,
                       **overrides: Any) -> tuple[Config, dict]:
    """(config, float32 params) of a local transformers checkpoint folder (GPT2LMHeadModel or
    LlamaForCausalLM; tied or untied head; GQA). Nothing is downloaded.

    ``overrides`` are config fields (``dtype``, ``remat``...); ``block_size`` may be shorter
    than the checkpoint's context (GPT-2's position table is cropped to it); ``vocab_pad_to``
    adds zero padding rows to the embedding and head (masked). ``vocab_size``:
    a tokenizer's vocabulary, which must fit in the model's. ``ValueError`` (one line) for a
    folder without config.json or weights, an unsupported architecture, a tensor of the wrong
    shape, missing or unexpected tensors, and a vocabulary mismatch.
    """
    path = os.fspath(path)
    d = read_hf_config(path)
    try:
        full = config_from_hf(d)
    except KeyError as e:
        raise ValueError(f"{path}/config.json: missing field {e}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}/config.json: {e}") from None
    sd = dict(read_hf_weights(path))
    emb = next((k for k in _EMBEDDINGS if k in sd), None)
    if emb is not None and sd[emb].shape[0] != full.vocab_size:
        raise ValueError(f"{path}: vocabulary mismatch: config.json vocab_size={full.vocab_size} "
                         f"but {emb} has {sd[emb].shape[0]} rows")
    if vocab_size is not None and vocab_size > full.vocab_size:
        raise ValueError(f"{path}: vocabulary mismatch: the tokenizer has {vocab_size} tokens, "
                         f"the model's vocab_size={full.vocab_size}")
    block = overrides.get("block_size", full.block_size)
    if block > full.block_size:
        raise ValueError(f"{path}: block_size={block} exceeds the checkpoint's context "
                         f"{full.block_size}")
    try:
        cfg = config_from_hf(d, **overrides)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    if family(cfg).name == "gpt2" and block < full.block_size:
        for k in ("transformer.wpe.weight", "wpe.weight"):
            if k in sd:
                sd[k] = sd[k][:block]
    try:
        params = from_hf(cfg, sd)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return cfg, params


def generation_config(config: Config, eos_token_id: int | None = None) -> dict[str, Any]:
    """``generation_config.json``: the model config's bos/eos tokens (or ``eos_token_id``)."""
    hc = hf_config(config)
    eos = hc.get("eos_token_id") if eos_token_id is None else eos_token_id
    out: dict[str, Any] = {"_from_model_config": True}
    if hc.get("bos_token_id") is not None:
        out["bos_token_id"] = hc["bos_token_id"]
    if eos is not None:
        out["eos_token_id"] = eos
    return out


def save_hf_checkpoint(config: Config, params: Any, out: str | os.PathLike, *,
                       overwrite: bool = False,
                       extra_files: Iterable[str | os.PathLike] | Mapping[str, Any] = (),
                       eos_token_id: int | None = None) -> str:
    """Write a transformers checkpoint folder ``out``: ``config.json``, ``model.safetensors``
    (float32), ``generation_config.json`` and ``extra_files`` (tokenizer files): paths copied
    under their own name, or ``{name: source path or bytes (the content)}``.

    Atomic: everything is written into a temporary sibling folder, renamed to ``out`` when
    complete, so ``out`` is either absent, the previous folder, or the complete new one; a
    killed write leaves only ``out.tmp-*`` siblings, removed by the next call. An existing
    ``out`` is a ``ValueError`` unless ``overwrite``. Returns ``out``.
    """
    out = os.path.abspath(os.fspath(out))
    parent, name = os.path.split(out)
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"{out} exists (pass overwrite to replace it)")
    os.makedirs(parent, exist_ok=True)
    for leftover in os.listdir(parent):  # of a killed earlier write
        if leftover.startswith(f"{name}.tmp-") or leftover.startswith(f"{name}.old-"):
            shutil.rmtree(os.path.join(parent, leftover), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=parent)
    try:
        write_safetensors(os.path.join(tmp, WEIGHTS), to_hf(config, params))
        _write_json(os.path.join(tmp, "config.json"), hf_config(config))
        _write_json(os.path.join(tmp, "generation_config.json"),
                    generation_config(config, eos_token_id))
        extra = (dict(extra_files) if isinstance(extra_files, Mapping)
                 else {os.path.basename(f): f for f in extra_files})
        for fname, src in extra.items():
            if isinstance(src, bytes):
                with open(os.path.join(tmp, fname), "wb") as f:
                    f.write(src)
            else:
                shutil.copyfile(src, os.path.join(tmp, fname))
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f"{name}.old-", dir=parent)
            os.rename(out, os.path.join(old, name))
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_json(path: str, d: Mapping[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
