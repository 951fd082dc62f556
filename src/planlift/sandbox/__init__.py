"""Running model-written programs against tests, contained (see `planlift.sandbox.runner`)."""

from planlift.sandbox.records import STATUSES, CodeTest, Limits, ProgramJob, SandboxResult
from planlift.sandbox.runner import Sandbox

__all__ = ["STATUSES", "CodeTest", "Limits", "ProgramJob", "Sandbox", "SandboxResult"]
