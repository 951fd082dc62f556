"""Readers for the vendored data files in `data/` (see data/README.md), with file:line errors."""

from planlift.datasets.files import data_dir, read_json, read_jsonl
from planlift.datasets.gsm8k import GSM8KRecord, load_gsm8k, strip_calculator_annotations

__all__ = ["GSM8KRecord", "data_dir", "load_gsm8k", "read_json", "read_jsonl", "strip_calculator_annotations"]
