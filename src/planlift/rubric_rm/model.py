"""The rubric reasoning reward model: a causal-LM body without its LM head, five rubric heads, a total head.

    pooled   = hidden state of the last non-padding token (left or right padding)     [B, H]
    logits_d = dimension_heads[d](pooled)                 over labels 0..4           [B, D, 5]
    E_d      = sum_k k * softmax(logits_d)_k                                          [B, D]
    derived  = sum_d w_d * E_d / 4                                                    [B] in [0, 1]
    total    = sigmoid(total_head(pooled))                                            [B] in [0, 1]
    score    = 0.5 * derived + 0.5 * total   (derived alone when rm_use_total_head is false)

Parameter names and config keys are the authors' released checkpoints': `model.*` (the backbone, e.g.
Qwen2Model or LlamaModel), `dimension_heads.{0..4}.weight/bias`, `total_head.weight/bias`;
config.json carries `rm_dimension_names`, `rm_dimension_weights`, `rm_num_labels`, `rm_use_total_head`.
So their released checkpoints load with `RubricRewardModel.from_pretrained`, and ours load in theirs.

Position ids follow the attention mask (so a left-padded row sees the same positions as an unpadded one).
The heads run outside autocast in their own parameters' dtype: float32 whatever the backbone's dtype (bf16
weights, or bf16-mixed's autocast), bf16 only when the whole module was cast (Lightning's bf16-true); their
logits are returned as float32.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planlift.errors import ConfigError, WeightsNotFoundError
from planlift.rm.base import MATH_DIMENSIONS

log = logging.getLogger(__name__)

RM_CONFIG_KEYS = ("rm_dimension_names", "rm_dimension_weights", "rm_num_labels", "rm_use_total_head")
BACKBONE_PREFIX = "model."
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_FILE = "model.safetensors"


@dataclass
class RubricOutput:
    """What the RM computes for a batch of B inputs with D dimensions over L labels."""

    dimension_logits: torch.Tensor  # [B, D, L]
    expected: torch.Tensor  # [B, D] expected label, in [0, L - 1]
    derived: torch.Tensor  # [B] in [0, 1]
    total: torch.Tensor | None  # [B] sigmoid(total head), None without a total head
    score: torch.Tensor  # [B] in [0, 1]
    hidden: torch.Tensor | None = None  # [B, T, H] last hidden states, when asked for (the LM term)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] mask -> [B] index of each row's last non-padding token (right or left padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


class RubricRewardModel(nn.Module):
    """Rubric heads on a backbone (an HF base model: `AutoModel`, no LM head).

    Args:
        backbone: the body (Qwen2Model, LlamaModel, ...), possibly LoRA-wrapped while training.
        dimension_names: the 5 rubric dimensions (MATH_DIMENSIONS or CODE_DIMENSIONS).
        dimension_weights: w_d (default: equal, 0.2 each).
        num_labels: labels per dimension (5: 0..4).
        use_total_head: add the total head (the authors' default).
        seed: initialisation of the heads (normal with the backbone's initializer_range, zero bias).
    """

    def __init__(
        self,
        backbone: nn.Module,
        dimension_names: tuple[str, ...] | list[str] = MATH_DIMENSIONS,
        dimension_weights: list[float] | None = None,
        num_labels: int = 5,
        use_total_head: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        names = list(dimension_names)
        weights = (
            list(dimension_weights) if dimension_weights is not None else [1.0 / len(names)] * len(names)
        )
        if len(weights) != len(names):
            raise ConfigError(
                f"rm dimension_weights has {len(weights)} values for {len(names)} dimension_names"
            )
        check_dimension_weights(weights, "rm dimension_weights")
        if num_labels < 2:
            raise ConfigError(f"rm num_labels must be >= 2, got {num_labels}")
        self.model = backbone
        self.dimension_names = names
        self.weights = [float(w) for w in weights]
        self.num_labels = num_labels
        self.use_total_head = use_total_head
        hidden = backbone.config.hidden_size
        self.dimension_heads = nn.ModuleList(nn.Linear(hidden, num_labels) for _ in names)
        self.total_head = nn.Linear(hidden, 1) if use_total_head else None
        self.register_buffer("label_values", torch.arange(num_labels, dtype=torch.float32), persistent=False)
        self._init_heads(getattr(backbone.config, "initializer_range", 0.02), seed)
        self.tokenizer = None  # set by the loaders; not a module

    def _init_heads(self, std: float, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        heads = [*self.dimension_heads, *([self.total_head] if self.total_head is not None else [])]
        with torch.no_grad():
            for head in heads:
                head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
                head.bias.zero_()

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.dimension_heads.parameters()).device

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_hidden: bool = False
    ) -> RubricOutput:
        """input_ids, attention_mask: [B, T] (either padding side)."""
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # [B, T, H]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[rows, last_token_index(attention_mask)]  # [B, H]
        logits, total_logit = self.heads(pooled)  # [B, D, L], [B]
        expected = (logits.softmax(dim=-1) * self.label_values).sum(dim=-1)  # [B, D]
        derived = self.derived_score(expected)  # [B]
        total = torch.sigmoid(total_logit) if total_logit is not None else None
        score = self.combined_score(derived, total)
        return RubricOutput(logits, expected, derived, total, score, hidden if return_hidden else None)

    def derived_score(self, labels: torch.Tensor) -> torch.Tensor:
        """sum_d w_d * label_d / (L - 1): labels on the 0..L-1 scale [B, D] (expected or gold) -> [B]."""
        # from the Python floats: a float32 buffer would be cast with the module (bf16-true: 0.2 -> 0.2002)
        weights = torch.tensor(self.weights, dtype=torch.float32, device=labels.device)
        return (labels.float() * weights).sum(dim=-1) / (self.num_labels - 1)

    def combined_score(self, derived: torch.Tensor, total: torch.Tensor | None) -> torch.Tensor:
        """The score: the derived score averaged with the total (in [0, 1]) when the model has a total head."""
        return 0.5 * derived + 0.5 * total if total is not None and self.use_total_head else derived

    def gold_score(self, labels: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """The score a rubric's gold labels [B, D] and total [B] give: what a perfect RM would output."""
        return self.combined_score(self.derived_score(labels), total)

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rubric heads on hidden states [..., H] (any dtype): dimension logits [..., D, L] and the
        total head's logit [...] (None without a total head), float32. Computed in the heads' own dtype
        with autocast off (module docstring)."""
        dtype = self.dimension_heads[0].weight.dtype
        with torch.autocast(device_type=features.device.type, enabled=False):
            features = features.to(dtype)
            logits = torch.stack([head(features) for head in self.dimension_heads], dim=-2).float()
            total = self.total_head(features).squeeze(-1).float() if self.total_head is not None else None
        return logits, total

    # ---- checkpoints in the authors' layout ---------------------------------------------------------

    def rm_config(self) -> dict[str, Any]:
        return {
            "rm_dimension_names": list(self.dimension_names),
            "rm_dimension_weights": list(self.weights),
            "rm_num_labels": self.num_labels,
            "rm_use_total_head": self.use_total_head,
        }

    def merge_lora(self) -> None:
        """Fold a LoRA adapter into the backbone (before export)."""
        if hasattr(self.model, "merge_and_unload"):
            self.model = self.model.merge_and_unload()

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(BACKBONE_PREFIX)}

    def save_pretrained(self, directory: str | Path, max_shard_size: str = "5GB") -> None:
        """config.json (backbone config + rm_* keys) and safetensors with `model.*` and head tensors;
        the tokenizer too when the model has one."""
        from huggingface_hub import save_torch_state_dict

        if hasattr(self.model, "merge_and_unload"):
            raise RuntimeError("merge the LoRA adapter first (RubricRewardModel.merge_lora)")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.model.config
        for key, value in self.rm_config().items():
            setattr(config, key, value)
        config.classifier_dropout = 0.0
        config.architectures = [f"{type(self.model).__name__.removesuffix('Model')}ForReasonRewardModel"]
        config.save_pretrained(directory)
        state = {f"{BACKBONE_PREFIX}{k}": v for k, v in self.model.state_dict().items()}
        state.update(self.head_state_dict())
        save_torch_state_dict(state, directory, max_shard_size=max_shard_size)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, dtype: str = "float32", key: str = "rm.path"
    ) -> RubricRewardModel:
        """Load a reward-model checkpoint (ours or the authors'), with its tokenizer."""
        from transformers import AutoConfig, AutoModel

        from planlift.models.loading import resolve_dtype

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise WeightsNotFoundError(f"weights not found: {key}={str(directory)!r} has no config.json")
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        absent = [k for k in RM_CONFIG_KEYS if not hasattr(config, k)]
        if absent:
            raise ConfigError(
                f"{key}={str(directory)!r} is not a reasoning-RM checkpoint: config.json lacks {absent}"
            )
        check_dimension_weights(
            config.rm_dimension_weights, f"{key}={str(directory)!r}: config.json rm_dimension_weights"
        )
        backbone, info = AutoModel.from_pretrained(
            directory,
            config=config,
            dtype=resolve_dtype(dtype, key.rsplit(".", 1)[0] + ".dtype"),
            local_files_only=True,
            output_loading_info=True,
        )
        if info["missing_keys"]:
            raise WeightsNotFoundError(
                f"{directory}: checkpoint lacks backbone weights {sorted(info['missing_keys'])[:5]}"
            )
        model = cls(
            backbone,
            config.rm_dimension_names,
            config.rm_dimension_weights,
            config.rm_num_labels,
            config.rm_use_total_head,
        )
        model.load_state_dict(read_tensors(directory, set(model.head_state_dict())), strict=False)
        model.tokenizer = _load_rm_tokenizer(str(directory))
        return model


def check_dimension_weights(weights, where: str) -> None:
    """The rubric weights w_d: >= 0 and summing to 1, so that the score (a weighted mean of the dimensions'
    expected labels, then averaged with the total head) stays in [0, 1] as the reward expects."""
    values = [float(w) for w in weights]
    if not all(math.isfinite(w) and w >= 0 for w in values) or not math.isclose(sum(values), 1, abs_tol=1e-4):
        raise ConfigError(f"{where} must be >= 0 and sum to 1, got {list(weights)} (sum {sum(values):g})")


def read_tensors(directory: Path, names: set[str]) -> dict[str, torch.Tensor]:
    """The named tensors from a (possibly sharded) safetensors checkpoint, as float32."""
    from safetensors import safe_open

    index = directory / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {directory / weight_map[name] for name in names if name in weight_map}
    else:
        files = {directory / SAFETENSORS_FILE}
    found: dict[str, torch.Tensor] = {}
    for file in sorted(files):
        if not file.is_file():
            raise WeightsNotFoundError(f"weights not found: {file}")
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for name in names & set(handle.keys()):
                found[name] = handle.get_tensor(name).float()
    missing = sorted(names - set(found))
    if missing:
        raise WeightsNotFoundError(f"{directory}: checkpoint lacks reward-head tensors {missing}")
    return found


def _load_rm_tokenizer(source: str):
    from planlift.models.loading import load_tokenizer

    tokenizer = load_tokenizer(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _freeze_all_but_top(backbone: nn.Module, layers: int) -> None:
    blocks = getattr(backbone, "layers", None)
    if blocks is None:
        raise ConfigError("rm_backbone.train_top_layers needs a backbone with `.layers` (Qwen2, Llama, ...)")
    if not 0 < layers <= len(blocks):
        raise ConfigError(f"rm_backbone.train_top_layers must be in 1..{len(blocks)}, got {layers}")
    backbone.requires_grad_(False)
    for block in list(blocks)[-layers:]:
        block.requires_grad_(True)
    if getattr(backbone, "norm", None) is not None:
        backbone.norm.requires_grad_(True)


def build_reward_model(
    pretrained: str | None = None,
    tiny: dict[str, Any] | None = None,
    dimension_names: list[str] | tuple[str, ...] = MATH_DIMENSIONS,
    dimension_weights: list[float] | None = None,
    num_labels: int = 5,
    use_total_head: bool = True,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    train_top_layers: int | None = None,
    gradient_checkpointing: bool = False,
    allow_download: bool = False,
    seed: int = 0,
) -> RubricRewardModel:
    """The RM to train (the `rm_backbone` config group).

    `pretrained`: an RM checkpoint (continue training it), a causal-LM checkpoint directory, hub id,
    or `packaged:<name>` (backbone weights, fresh heads; the entry point resolves `bootstrap:<role>`); or null with `tiny` (kwargs of
    `build_tiny_qwen2`) for a randomly initialised tiny Qwen2 with the character tokenizer.
    `lora` (r, alpha, dropout, target_modules) trains an adapter plus the heads; `train_top_layers`
    trains only the last N blocks (and the final norm) plus the heads. Both off: full fine-tuning.
    """
    from planlift.models.loading import locate_checkpoint, resolve_dtype

    if lora is not None and train_top_layers is not None:
        raise ConfigError("set rm_backbone.lora or rm_backbone.train_top_layers, not both")
    torch_dtype = resolve_dtype(dtype, "rm_backbone.dtype")
    if pretrained is None:
        if tiny is None:
            raise ConfigError("rm_backbone needs `pretrained` (a checkpoint) or `tiny` (a random tiny Qwen2)")
        from planlift.models import build_char_tokenizer, build_tiny_qwen2

        tokenizer = build_char_tokenizer()
        backbone = build_tiny_qwen2(tokenizer, seed=seed, **tiny).model.to(torch_dtype)
        model = RubricRewardModel(
            backbone, dimension_names, dimension_weights, num_labels, use_total_head, seed
        )
        model.tokenizer = tokenizer
    else:
        source = locate_checkpoint(
            pretrained,
            "rm_backbone.pretrained",
            allow_download,
        )
        config_file = Path(source) / "config.json"
        if config_file.is_file() and "rm_dimension_names" in json.loads(config_file.read_text()):
            model = RubricRewardModel.from_pretrained(source, dtype, "rm_backbone.pretrained")
        else:
            from transformers import AutoModel

            backbone = AutoModel.from_pretrained(
                source, dtype=torch_dtype, local_files_only=not allow_download
            )
            model = RubricRewardModel(
                backbone, dimension_names, dimension_weights, num_labels, use_total_head, seed
            )
            model.tokenizer = _load_rm_tokenizer(source)
    if gradient_checkpointing:
        model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if train_top_layers is not None:
        _freeze_all_but_top(model.model, train_top_layers)
    if lora is not None:
        from planlift.models.adapters import add_lora

        model.model = add_lora(model.model, lora, "FEATURE_EXTRACTION", "rm_backbone.lora")
    model.train()  # from_pretrained returns eval mode; Lightning keeps submodules' modes as they are
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "reward model: %s backbone, %.2f M parameters, %.2f M trainable",
        type(model.model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
        trainable / 1e6,
    )
    return model
