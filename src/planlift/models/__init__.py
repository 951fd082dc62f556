"""Models: the character tokenizer, tiny Qwen2 models, offline loading and the planner policy."""

from planlift.models.char_tokenizer import build_char_tokenizer
from planlift.models.policy import Policy, load_policy
from planlift.models.tiny import build_tiny_qwen2

__all__ = ["Policy", "build_char_tokenizer", "build_tiny_qwen2", "load_policy"]
