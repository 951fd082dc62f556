"""The bootstrap stage: tiny executor and warm-started planner, trained once and cached."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "Bootstrap": "stage",
    "BootstrapArtifacts": "stage",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
