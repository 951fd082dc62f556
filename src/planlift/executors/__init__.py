"""Executors: frozen models that turn problem + reasoning into an answer or a program.

Backends: `HFExecutor` (in process), `VLLMExecutor` (vLLM's offline engine, imported lazily) and
`OpenAIExecutor` (any OpenAI-compatible server).
"""

from planlift.executors.base import Executor, ExecutorResult, ExecutorStats
from planlift.executors.hf import HFExecutor
from planlift.executors.openai import OpenAIExecutor
from planlift.executors.vllm import VLLMExecutor

__all__ = ["Executor", "ExecutorResult", "ExecutorStats", "HFExecutor", "OpenAIExecutor", "VLLMExecutor"]
