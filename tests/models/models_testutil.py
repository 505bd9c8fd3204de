"""Helpers for the models tests: build the HF reference model for one of our configs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import models as M

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

torch.set_num_threads(2)


def hf_config_obj(cfg: M.Config) -> Any:
    d = M.hf_config(cfg)
    d.pop("architectures")
    model_type = d.pop("model_type")
    if model_type == "gpt2":
        return transformers.GPT2Config(**d)
    return transformers.LlamaConfig(**d)


def hf_model(cfg: M.Config, seed: int = 0, device: str | None = None) -> Any:
    """The transformers model for ``cfg`` (eager attention, eval mode).

    Weights are randomised with std 0.1 (norm gains 1 ± 0.1, biases non-zero) so that every
    parameter matters, instead of HF's small init.
    """
    hc = hf_config_obj(cfg)
    hc._attn_implementation = "eager"
    cls = (
        transformers.GPT2LMHeadModel
        if isinstance(cfg, M.GPT2Config)
        else (transformers.LlamaForCausalLM)
    )
    if device == "meta":
        with torch.device("meta"):
            return cls(hc)
    torch.manual_seed(seed)
    model = cls(hc).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.1 * torch.randn(p.shape, generator=gen)
            is_gain = ("ln" in name or "norm" in name) and name.endswith("weight")
            p.copy_(noise + 1.0 if is_gain else noise)
    return model


def random_tokens(cfg: M.Config, batch: int, seq: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)


def hf_logits_loss_grads(model: Any, tokens: np.ndarray) -> tuple[np.ndarray, float, dict]:
    """HF logits, loss (labels=tokens, shifted inside HF) and autograd gradients by name."""
    model.zero_grad()
    t = torch.tensor(tokens, dtype=torch.long)
    out = model(input_ids=t, labels=t)
    out.loss.backward()
    grads = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}
    return out.logits.detach().numpy(), float(out.loss.detach()), grads


def np_params(cfg: M.Config, seed: int = 0) -> dict:
    """Random float32 numpy params with the model's tree structure (no jit compile needed)."""
    import jax

    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: (0.2 * rng.normal(size=s.shape)).astype(np.float32), M.param_shapes(cfg)
    )
