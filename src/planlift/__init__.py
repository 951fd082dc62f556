"""planlift: train LLM reasoning planners with executor-grounded rewards (TraceLift)."""

__version__ = "0.1.0"
