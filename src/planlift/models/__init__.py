"""Models: the character tokenizer, tiny Qwen2 models, offline loading and the planner policy."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "Policy": "policy",
    "build_char_tokenizer": "char_tokenizer",
    "build_tiny_qwen2": "tiny",
    "load_policy": "policy",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
