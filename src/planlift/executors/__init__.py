"""Executors: frozen models that turn problem + reasoning into an answer or a program."""

from planlift.executors.base import Executor, ExecutorResult, ExecutorStats
from planlift.executors.hf import HFExecutor

__all__ = ["Executor", "ExecutorResult", "ExecutorStats", "HFExecutor"]
