"""Errors a user can act on. Entry points print them without a stack trace."""


class PlanliftError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class ConfigError(PlanliftError, ValueError):
    """A config value is invalid; the message names the key."""


class WeightsNotFoundError(PlanliftError, FileNotFoundError):
    """Model weights are neither a local directory nor in the offline Hugging Face cache."""


class DataError(PlanliftError, ValueError):
    """A data file is malformed; the message names the file and line."""


class TooManyMaskedError(PlanliftError, RuntimeError):
    """More rollouts were masked (failed executor/RM calls) in one step than the config allows."""


class ExecutorUnavailableError(PlanliftError, RuntimeError):
    """The executor answered none of the prompts of a run: nothing was measured (its endpoint, weights or
    engine are unusable)."""
