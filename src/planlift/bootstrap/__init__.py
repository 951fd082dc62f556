"""The bootstrap stage: tiny executor and warm-started planner, trained once and cached."""

from planlift.bootstrap.stage import Bootstrap, BootstrapArtifacts

__all__ = ["Bootstrap", "BootstrapArtifacts"]
