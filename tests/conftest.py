"""Shared fixtures. Tests run single-threaded (two threads on two busy cores cost 10x)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def procedural_task():
    from planlift.tasks import ProceduralTask

    return ProceduralTask(sizes={"train": 300, "validation": 60, "test": 60})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny Qwen2 with the character tokenizer, saved as an HF directory."""
    from planlift.models import build_char_tokenizer, build_tiny_qwen2

    path = tmp_path_factory.mktemp("tiny_qwen2")
    tokenizer = build_char_tokenizer()
    model = build_tiny_qwen2(tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2, seed=1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One PLANLIFT_CACHE for the session's training subprocesses: the debug preset's bootstrap is built
    once (its key holds every setting it depends on, so other presets build their own beside it)."""
    return tmp_path_factory.mktemp("planlift_cache")


@pytest.fixture(scope="session")
def bos_checkpoint(tmp_path_factory):
    """A tiny Qwen2 whose tokenizer adds BOS to any text it encodes (as Llama 3's, Gemma's and Mistral's
    do) and whose chat template writes BOS itself."""
    from tokenizers import processors

    from planlift.models import build_char_tokenizer, build_tiny_qwen2
    from planlift.models.char_tokenizer import BOS

    path = tmp_path_factory.mktemp("tiny_bos")
    tokenizer = build_char_tokenizer()
    bos = tokenizer.convert_tokens_to_ids(BOS)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, bos)]
    )
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    model = build_tiny_qwen2(tokenizer, hidden_size=64, intermediate_size=128, num_hidden_layers=2, seed=1)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def trained_bootstrap(tmp_path_factory, procedural_task):
    """A short real bootstrap (trained tiny executor and planner) shared by the tests that need one."""
    from planlift.bootstrap import Bootstrap

    bootstrap = Bootstrap(
        procedural_task,
        cache_dir=str(tmp_path_factory.mktemp("bootstrap")),
        architecture={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
        executor={"steps": 30, "batch_size": 16},
        planner={"steps": 30, "batch_size": 16},
        eval_problems=20,
        accelerator="cpu",
        progress_bar=False,
    )
    bootstrap.ensure()
    return bootstrap
