"""load_policy with 4-bit quantization (hardware=qlora4bit) on the bitsandbytes CPU backend."""

from __future__ import annotations

import pytest
import torch

from planlift.errors import ConfigError
from planlift.models import load_policy

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
NF4 = {"bits": 4, "quant_type": "nf4", "compute_dtype": "float32", "double_quant": True}


def test_quantization_needs_lora(tiny_checkpoint):
    with pytest.raises(ConfigError, match="model.quantization needs model.lora"):
        load_policy(str(tiny_checkpoint), quantization=NF4)


def test_only_4_bits(tiny_checkpoint):
    with pytest.raises(ConfigError, match="model.quantization.bits must be 4"):
        load_policy(str(tiny_checkpoint), lora=LORA, quantization={**NF4, "bits": 8})


def test_4bit_base_with_adapter_trains_after_an_eval_forward(tiny_checkpoint):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    policy = load_policy(str(tiny_checkpoint), lora=LORA, quantization=NF4, gradient_checkpointing=True)
    model = policy.model
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 2 * 7  # 7 projections per layer
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    model.eval()
    with torch.no_grad():
        model(
            input_ids=ids
        )  # a rollout-like forward first (bitsandbytes repacks weights here unless told not to)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)
