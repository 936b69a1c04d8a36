"""The model side of the engine: paged attention, the Llama decoder, loading, sampling."""

from autellix.engine.model.attention import AttentionMetadata, allocate_kv_cache, paged_attention
from autellix.engine.model.default_model import default_model_path
from autellix.engine.model.llama import LlamaForCausalLM, ModelConfig
from autellix.engine.model.loader import load_config, load_model, load_tokenizer
from autellix.engine.model.sampler import Sampler, make_generator, suppress_tokens

__all__ = [
    "AttentionMetadata",
    "LlamaForCausalLM",
    "ModelConfig",
    "Sampler",
    "allocate_kv_cache",
    "default_model_path",
    "load_config",
    "load_model",
    "load_tokenizer",
    "make_generator",
    "paged_attention",
    "suppress_tokens",
]
