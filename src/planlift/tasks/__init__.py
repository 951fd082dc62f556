"""Tasks: problems, prompts and verifiers."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "ChatPrompt": "base",
    "CodeTask": "code",
    "GSM8KTask": "gsm8k",
    "HumanEvalTask": "code",
    "MBPPTask": "code",
    "Problem": "base",
    "ProceduralTask": "procedural",
    "Task": "base",
    "Verdict": "base",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
