"""The planner policy: a causal LM (optionally LoRA-adapted) and its tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from planlift.errors import ConfigError
from planlift.generation import render_prompt
from planlift.models.adapters import add_lora
from planlift.models.devices import default_device
from planlift.models.loading import load_model_and_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from planlift.tasks.base import ChatPrompt


@dataclass
class QuantizationSettings:
    """bitsandbytes 4-bit loading of the frozen base (QLoRA): nf4, double quantization, bf16 compute."""

    bits: int = 4
    quant_type: str = "nf4"
    compute_dtype: str = "bfloat16"
    double_quant: bool = True

    def __post_init__(self) -> None:
        if self.bits != 4:
            raise ConfigError(f"model.quantization.bits must be 4 (QLoRA), got {self.bits}")
        if self.quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"model.quantization.quant_type must be nf4 or fp4, got {self.quant_type!r}")

    def config(self):
        from transformers import BitsAndBytesConfig

        from planlift.models.loading import resolve_dtype

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_compute_dtype=resolve_dtype(self.compute_dtype, "model.quantization.compute_dtype"),
            bnb_4bit_use_double_quant=self.double_quant,
        )


class Policy:
    """A planner model with its tokenizer. (A plain class: Hydra would treat a dataclass kwarg as config.)"""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        use_chat_template: bool | None = None,
        lora: bool = False,
        source: str = "",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self.lora = lora
        self.source = source

    def render(self, prompts: Sequence[ChatPrompt]) -> list[str]:
        return [render_prompt(self.tokenizer, p, self.use_chat_template) for p in prompts]


def load_policy(
    pretrained: str,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    use_chat_template: bool | None = None,
    allow_download: bool = False,
    quantization: dict[str, Any] | None = None,
) -> Policy:
    """Load the planner. With `lora`, only the adapter trains and the adapter-disabled model is the reference.

    `quantization` (hardware=qlora4bit) loads the base in 4 bits with bitsandbytes on this rank's device and
    prepares it for k-bit training (`prepare_model_for_kbit_training`); it needs `lora`.
    """
    source = pretrained
    model_kwargs = None
    if quantization is not None:
        if lora is None:
            raise ConfigError(
                "model.quantization needs model.lora: a 4-bit base only trains through an adapter"
            )
        settings = QuantizationSettings(**quantization)
        model_kwargs = {"quantization_config": settings.config(), "device_map": {"": str(default_device())}}
    model, tokenizer = load_model_and_tokenizer(
        source, "model.pretrained", dtype, allow_download, model_kwargs
    )
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        # bitsandbytes 0.50 on CPU repacks 4-bit weights for inference at the first eval-mode forward
        # (our rollouts); training forwards after that fail ("a view of a leaf Variable ... in-place").
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if gradient_checkpointing:
        model.config.use_cache = False
    if lora is not None:
        model = add_lora(model, lora, "CAUSAL_LM", "model.lora")
    return Policy(
        model=model,
        tokenizer=tokenizer,
        use_chat_template=use_chat_template,
        lora=lora is not None,
        source=source,
    )
