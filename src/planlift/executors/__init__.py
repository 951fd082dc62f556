"""Executors: frozen models that turn problem + reasoning into an answer or a program.

Backends: `HFExecutor` (in process), `VLLMExecutor` (vLLM's offline engine, imported lazily) and
`OpenAIExecutor` (any OpenAI-compatible server).
"""

from planlift.lazy import lazy_exports

EXPORTS = {
    "Executor": "base",
    "ExecutorResult": "base",
    "ExecutorStats": "base",
    "HFExecutor": "hf",
    "OpenAIExecutor": "openai",
    "VLLMExecutor": "vllm",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
