"""ExportPlanner (`planner_hf`): the exported directory computes what the trained planner computes.

A QLoRA planner (nf4 base + LoRA adapter) on the bitsandbytes CPU backend: re-quantizing the merged
weights to 4 bits (peft's `merge_and_unload` on a 4-bit base) rounds most of the adapter's delta away.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from planlift.callbacks import ExportPlanner
from planlift.models import load_policy

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
NF4 = {"bits": 4, "quant_type": "nf4", "compute_dtype": "float32", "double_quant": True}


class PlannerHolder(pl.LightningModule):
    """What ExportPlanner reads from the GRPO module: its `policy`."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy


def moved_lora_policy(tiny_checkpoint, quantization=None, std=1e-2, dtype="float32"):
    """The tiny planner (nf4 with `quantization`) with an adapter that has moved: lora_B, zero at init,
    drawn with `std`; lora_A keeps peft's (seeded) init."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        policy = load_policy(str(tiny_checkpoint), dtype, lora=LORA, quantization=quantization)
        with torch.no_grad():
            for name, parameter in policy.model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=std)
    return policy.model.eval(), policy


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()  # [B, T, vocab]


def export(policy, dirpath):
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    ExportPlanner(str(dirpath)).on_fit_end(trainer, PlannerHolder(policy))


# The export is in the load dtype. With bf16 compute the trained planner's linears round to bf16 (measured:
# 4.5e-4 of an adapter effect of 2.0e-2 for a float32 export, 7.2e-4 for a bf16 one). The old export
# (re-quantized to nf4) was 1.3e-2 away in every case.
@pytest.mark.parametrize(
    "load_dtype, compute_dtype, tolerance",
    [("float32", "float32", 1e-5), ("float32", "bfloat16", 0.05), ("bfloat16", "bfloat16", 0.1)],
)
def test_qlora_export_is_the_trained_planner(tmp_path, tiny_checkpoint, load_dtype, compute_dtype, tolerance):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    quantization = {**NF4, "compute_dtype": compute_dtype}
    model, policy = moved_lora_policy(tiny_checkpoint, quantization, dtype=load_dtype)
    ids = torch.randint(4, len(policy.tokenizer), (3, 12), generator=torch.Generator().manual_seed(1))
    trained = logits(model, ids)
    with model.disable_adapter():
        base = logits(model, ids)
    adapter_effect = (trained - base).abs().mean().item()
    assert adapter_effect > 5e-3  # the adapter moved the planner by a measurable amount

    export(policy, tmp_path / "planner_hf")

    exported_model = AutoModelForCausalLM.from_pretrained(tmp_path / "planner_hf")
    exported = logits(exported_model, ids)
    error = (exported - trained).abs().mean().item()
    assert error < tolerance * adapter_effect, (error, adapter_effect)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in exported_model.modules())
    assert getattr(exported_model.config, "quantization_config", None) is None
    assert exported_model.dtype == getattr(torch, load_dtype)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())  # the trained planner is intact

    # the adapter itself, beside the merged model, applies to the same 4-bit base
    assert (tmp_path / "planner_hf" / "adapter" / "adapter_config.json").is_file()
    from peft import PeftModel

    reloaded = load_policy(str(tiny_checkpoint), load_dtype, lora=LORA, quantization=quantization)
    adapted = PeftModel.from_pretrained(reloaded.model.get_base_model(), tmp_path / "planner_hf" / "adapter")
    assert torch.allclose(logits(adapted.eval(), ids), trained, atol=1e-6)


def test_lora_export_without_quantization_is_merged(tmp_path, tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    model, policy = moved_lora_policy(tiny_checkpoint)
    ids = torch.randint(4, len(policy.tokenizer), (2, 10), generator=torch.Generator().manual_seed(1))
    trained = logits(model, ids)

    export(policy, tmp_path / "planner_hf")

    exported_model = AutoModelForCausalLM.from_pretrained(tmp_path / "planner_hf")
    assert not any("lora_" in name for name, _ in exported_model.named_parameters())
    assert torch.allclose(logits(exported_model, ids), trained, atol=1e-5)
    assert (tmp_path / "planner_hf" / "adapter" / "adapter_model.safetensors").is_file()


def test_cpu_repacked_4bit_weights_are_unpacked_before_dequantizing(tiny_checkpoint):
    """bitsandbytes' AVX512-BF16 layout (load_policy turns it off; another loader may not) dequantizes to
    the same weights up to its bf16 block scales, not to a scrambled matrix."""
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from planlift.callbacks.export import dequantized_merge

    model, _ = moved_lora_policy(tiny_checkpoint, NF4)
    standard = dequantized_merge(model, lora=True).state_dict()
    for parameter in model.parameters():
        if type(parameter).__name__ == "Params4bit":
            parameter.data, parameter.quant_state = _convert_weight_packed_for_cpu(
                parameter.data, parameter.quant_state
            )
    unpacked = dequantized_merge(model, lora=True).state_dict()
    for key, value in standard.items():
        assert torch.allclose(unpacked[key], value, rtol=0, atol=1e-2 * value.abs().max().item()), key


class GRPOLike(pl.LightningModule):
    """What weights=best reads: `policy`, and the planner registered as `planner` (its checkpoint keys)."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy
        self.planner = policy.model


def best_trainer(best_path: str, score: float = 0.25) -> pl.Trainer:
    from pytorch_lightning.callbacks import ModelCheckpoint

    selector = ModelCheckpoint(monitor="val/e2e_acc", mode="max")
    selector.best_model_path, selector.best_model_score = best_path, torch.tensor(score)
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[selector])


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_best_weights_are_the_best_checkpoints(tmp_path, tiny_checkpoint, lora):
    """The best checkpoint's trained weights (its adapter alone under LoRA, as GRPO saves it) are exported,
    not the planner as training left it; planlift_export.json names the checkpoint."""
    import json

    from transformers import AutoModelForCausalLM

    if lora:
        _, policy = moved_lora_policy(tiny_checkpoint)
    else:
        policy = load_policy(str(tiny_checkpoint), "float32")
    module = GRPOLike(policy)
    trained = {k for k, p in module.named_parameters() if p.requires_grad}
    with torch.random.fork_rng():
        torch.manual_seed(3)
        best = {k: v + 0.01 * torch.randn_like(v) for k, v in module.state_dict().items() if k in trained}
    torch.save({"state_dict": best, "global_step": 6}, tmp_path / "best.ckpt")
    ids = torch.randint(4, len(policy.tokenizer), (2, 10), generator=torch.Generator().manual_seed(1))
    last = logits(policy.model.eval(), ids)
    module.load_state_dict(best, strict=False)
    expected = logits(policy.model.eval(), ids)  # the planner with the best checkpoint's weights
    module.load_state_dict({k: v - 1.0 for k, v in best.items()}, strict=False)  # training moved on

    trainer = best_trainer(str(tmp_path / "best.ckpt"))
    callback = ExportPlanner(str(tmp_path / "planner_hf"), weights="best")
    callback.setup(trainer, module, "fit")
    callback.on_fit_end(trainer, module)

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "planner_hf").eval()
    assert torch.allclose(logits(exported, ids), expected, atol=1e-5)
    assert not torch.allclose(expected, last, atol=1e-3)
    provenance = json.loads((tmp_path / "planner_hf" / "planlift_export.json").read_text())
    assert provenance == {
        "weights": "best",
        "step": 6,
        "checkpoint": str(tmp_path / "best.ckpt"),
        "monitor": "val/e2e_acc",
        "score": 0.25,
    }


def test_best_weights_need_a_monitored_checkpoint_and_a_known_value(tmp_path, tiny_checkpoint, caplog):
    from planlift.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"export_planner.weights must be one of \('last', 'best'\), got 'top'"
    ):
        ExportPlanner(str(tmp_path), weights="top")
    module = GRPOLike(load_policy(str(tiny_checkpoint), "float32"))
    unmonitored = pl.Trainer(accelerator="cpu", devices=1, logger=False)  # Lightning's own, no monitor
    with pytest.raises(ConfigError, match="needs a ModelCheckpoint with a monitor"):
        ExportPlanner(str(tmp_path), weights="best").setup(unmonitored, module, "fit")
    # no validation saved a best checkpoint: the last step's planner, said in the log and the provenance
    trainer = best_trainer("")
    ExportPlanner(str(tmp_path / "planner_hf"), weights="best").on_fit_end(trainer, module)
    assert "no best checkpoint was saved" in caplog.text
    assert '"weights": "last"' in (tmp_path / "planner_hf" / "planlift_export.json").read_text()
