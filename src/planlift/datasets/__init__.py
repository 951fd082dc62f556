"""Readers for the vendored data files in `data/` (see data/README.md), with file:line errors."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "GSM8KRecord": "gsm8k",
    "data_dir": "files",
    "load_gsm8k": "gsm8k",
    "read_json": "files",
    "read_jsonl": "files",
    "strip_calculator_annotations": "gsm8k",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
