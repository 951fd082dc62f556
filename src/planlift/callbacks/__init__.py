"""Lightning callbacks."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "ExportPlanner": "export",
    "LastCheckpoint": "checkpoint",
    "SameResumeCheckpoint": "checkpoint",
    "StepProgressBar": "progress",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
