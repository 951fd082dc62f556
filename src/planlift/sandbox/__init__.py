"""Running model-written programs against tests, contained (see `planlift.sandbox.runner`)."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "STATUSES": "records",
    "CodeTest": "records",
    "Limits": "records",
    "ProgramJob": "records",
    "Sandbox": "runner",
    "SandboxResult": "records",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
