"""GPT-2 and LLaMA-3 in Flax, numerically matching HuggingFace transformers.

Typical use::

    from models import get_config, init_params, build, loss_fn
    cfg = get_config("gpt2", "small", vocab_size=256, block_size=128)
    params = init_params(cfg, jax.random.key(0))
    logits = build(cfg).apply({"params": params}, tokens)        # float32 [B, T, V]
    loss = loss_fn(logits, targets)                               # explicit (unshifted) targets
"""

from .api import FAMILIES as FAMILIES
from .api import MODEL_SIZES as MODEL_SIZES
from .api import Config as Config
from .api import Family as Family
from .api import build as build
from .api import config_from_hf as config_from_hf
from .api import count_params as count_params
from .api import family as family
from .api import flops_per_token as flops_per_token
from .api import from_hf as from_hf
from .api import generate as generate
from .api import get_config as get_config
from .api import hf_config as hf_config
from .api import init_params as init_params
from .api import num_params as num_params
from .api import pad_vocab as pad_vocab
from .api import param_shapes as param_shapes
from .api import save_hf as save_hf
from .api import to_hf as to_hf
from .common import decay_mask as decay_mask
from .common import loss_fn as loss_fn
from .gpt2 import GPT2 as GPT2
from .gpt2 import GPT2_CONFIGS as GPT2_CONFIGS
from .gpt2 import GPT2Config as GPT2Config
from .hf_checkpoint import load_hf_checkpoint as load_hf_checkpoint
from .hf_checkpoint import save_hf_checkpoint as save_hf_checkpoint
from .hf_io import read_safetensors as read_safetensors
from .hf_io import write_safetensors as write_safetensors
from .llama import LLAMA_CONFIGS as LLAMA_CONFIGS
from .llama import Llama as Llama
from .llama import LlamaConfig as LlamaConfig
from .llama import RopeScaling as RopeScaling
from .parts import ModelParts as ModelParts
from .parts import model_parts as model_parts
from .parts import param_axes as param_axes
from .parts import vocab_parallel_xent as vocab_parallel_xent
