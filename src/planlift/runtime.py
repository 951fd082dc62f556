"""Process set-up shared by the entry points: project root, config resolvers, threads, user errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from omegaconf import OmegaConf

from planlift.errors import PlanliftError

log = logging.getLogger("planlift")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _run_name(override_dirname: str) -> str:
    """TensorBoard run names come from the command-line overrides ("reward=grounded,seed=1")."""
    return override_dirname or "default"


if not OmegaConf.has_resolver("planlift.run_name"):
    OmegaConf.register_new_resolver("planlift.run_name", _run_name)


def configure_threads(torch_threads: int | None) -> None:
    """Pin torch's intra-op threads (two threads on two busy cores cost 10x: RECIPES)."""
    import torch

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(torch_threads))


def quiet_libraries() -> None:
    """Progress bars of weight loading and hub warnings drown the training log."""
    with contextlib.suppress(Exception):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def user_error(error: BaseException) -> PlanliftError | None:
    """The PlanliftError behind `error` (Hydra wraps errors raised while instantiating)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PlanliftError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print configuration and input errors as one clear line and exit 2, without a stack trace."""
    try:
        yield
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        log.error("%s: %s", type(cause).__name__, cause)
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
