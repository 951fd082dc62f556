"""Fixtures for the reward-model tests: tiny backbones and a checkpoint in the authors' exact layout."""

from __future__ import annotations

import pytest
import torch

from planlift.rm.base import MATH_DIMENSIONS

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512}  # fmt: skip


def write_authors_checkpoint(path, shard: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A Qwen2 reward model saved the way the authors' merge script saves theirs: config.json with the
    rm_* keys and architectures ["Qwen2ForReasonRewardModel"], bf16 safetensors with `model.*`,
    `dimension_heads.{0..4}.*` and `total_head.*`, and the tokenizer. Returns the tensors written."""
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    from planlift.models import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        body = Qwen2Model(config)
    tensors = {f"model.{k}": v.to(torch.bfloat16) for k, v in body.state_dict().items()}
    for i in range(5):
        tensors[f"dimension_heads.{i}.weight"] = torch.randn(5, 32, generator=generator).to(torch.bfloat16)
        tensors[f"dimension_heads.{i}.bias"] = torch.randn(5, generator=generator).to(torch.bfloat16)
    tensors["total_head.weight"] = torch.randn(1, 32, generator=generator).to(torch.bfloat16)
    tensors["total_head.bias"] = torch.randn(1, generator=generator).to(torch.bfloat16)
    config.rm_dimension_names = list(MATH_DIMENSIONS)
    config.rm_dimension_weights = [0.2] * 5
    config.rm_num_labels = 5
    config.rm_use_total_head = True
    config.classifier_dropout = 0.0
    config.architectures = ["Qwen2ForReasonRewardModel"]
    config.torch_dtype = "bfloat16"
    config.save_pretrained(path)
    if shard:
        save_torch_state_dict(tensors, path, max_shard_size="40KB")
    else:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(path)
    return tensors


@pytest.fixture(scope="session")
def authors_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("authors_rm")
    return path, write_authors_checkpoint(path)


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory):
    """Our export of a randomly initialised tiny RM (heads seeded so scores differ across inputs)."""
    from planlift.rubric_rm.model import build_reward_model

    path = tmp_path_factory.mktemp("tiny_rm")
    model = build_reward_model(tiny=TINY, seed=1)
    with torch.no_grad():
        for head in [*model.dimension_heads, model.total_head]:
            head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    model.save_pretrained(path)
    return path
