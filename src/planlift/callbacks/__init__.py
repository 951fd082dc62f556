"""Lightning callbacks."""

from planlift.callbacks.checkpoint import LastCheckpoint
from planlift.callbacks.export import ExportPlanner

__all__ = ["ExportPlanner", "LastCheckpoint"]
