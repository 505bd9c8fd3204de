"""``from_hf`` with a tied config: a present ``lm_head.weight`` must equal the embedding.

A tied model has no head of its own, so loading a different head would silently replace it by
the embedding (transformers' own logits then differ from ours). Equal heads (what tied
checkpoints hold) load as before.
"""

from __future__ import annotations

import numpy as np
import pytest
from models_testutil import hf_model, np_params

import models as M

GPT2 = M.get_config("gpt2", "tiny", n_head=4)
LLAMA_TIED = M.get_config("llama3", "tiny", tie_embeddings=True, rope_scaling=None)


@pytest.mark.parametrize("cfg, emb", [(GPT2, "transformer.wte.weight"),
                                      (LLAMA_TIED, "model.embed_tokens.weight")])
def test_tied_config_refuses_a_different_head(cfg, emb) -> None:
    params = np_params(cfg, 0)
    sd = M.to_hf(cfg, params)
    same = dict(sd, **{"lm_head.weight": sd[emb].copy()})
    loaded = M.from_hf(cfg, same)  # equal: accepted
    for a, b in zip(M.to_hf(cfg, loaded).values(), sd.values()):
        np.testing.assert_array_equal(a, b)
    other = sd[emb].copy()
    other[3, 7] += 0.5
    with pytest.raises(ValueError, match=r"lm_head\.weight differs from .*max \|difference\| 0\.5"):
        M.from_hf(cfg, dict(sd, **{"lm_head.weight": other}))


def test_untied_transformers_checkpoint_into_a_tied_config_is_refused() -> None:
    # a real untied LLaMA from transformers: its head differs from its embedding
    untied = M.get_config("llama3", "tiny", tie_embeddings=False, rope_scaling=None)
    hf = hf_model(untied, seed=3)
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    with pytest.raises(ValueError, match="tie_embeddings=False"):
        M.from_hf(LLAMA_TIED, sd)
    assert not np.array_equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    M.from_hf(untied, sd)  # the matching config loads it
