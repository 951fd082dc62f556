"""Tasks: problems, prompts and verifiers."""

from planlift.tasks.base import ChatPrompt, Problem, Task, Verdict
from planlift.tasks.procedural import ProceduralTask

__all__ = ["ChatPrompt", "Problem", "ProceduralTask", "Task", "Verdict"]
