"""Tasks: problems, prompts and verifiers."""

from planlift.tasks.base import ChatPrompt, Problem, Task, Verdict
from planlift.tasks.code import CodeTask, HumanEvalTask, MBPPTask
from planlift.tasks.gsm8k import GSM8KTask
from planlift.tasks.procedural import ProceduralTask

__all__ = [
    "ChatPrompt",
    "CodeTask",
    "GSM8KTask",
    "HumanEvalTask",
    "MBPPTask",
    "Problem",
    "ProceduralTask",
    "Task",
    "Verdict",
]
