"""The rubric RM: pooling under both paddings, the score formula, the authors' checkpoint layout, LoRA."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from planlift.checkpoints import CheckpointResolver, resolve_checkpoints
from planlift.errors import ConfigError, WeightsNotFoundError
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rubric_rm.inputs import pad_batch
from planlift.rubric_rm.model import RubricRewardModel, build_reward_model, last_token_index
from tests.rm.conftest import TINY, write_authors_checkpoint

TEXTS = ["<task>math</task> S3=1+2=3", "x", "<reasoning>\nS3=3+0=3\nS4=3-0=3\n</reasoning>"]


def encode(tokenizer, texts=TEXTS):
    return [tokenizer(t)["input_ids"] for t in texts]


def scores_alone_and_padded(model, sequences):
    alone = torch.cat(
        [model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)).score for s in sequences]
    )
    padded = {}
    for side in ("left", "right"):
        ids, mask = pad_batch(sequences, pad_id=0, side=side)
        padded[side] = model(ids, mask).score
    return alone, padded


def test_last_token_index_under_both_paddings():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_scores_do_not_depend_on_padding(architecture):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    if architecture == "qwen2":
        model = build_reward_model(tiny=TINY, seed=3)
    else:
        from planlift.models import build_char_tokenizer

        tokenizer = build_char_tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), **TINY)
        model = RubricRewardModel(LlamaModel(config), seed=3)
        model.tokenizer = tokenizer
    for head in model.dimension_heads:
        torch.nn.init.normal_(head.weight, std=1.0)  # spread the scores so a wrong pooling would show
    model.eval()
    with torch.no_grad():
        alone, padded = scores_alone_and_padded(model, encode(model.tokenizer))
    assert len(set(alone.tolist())) == 3
    torch.testing.assert_close(padded["right"], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded["left"], alone, atol=1e-5, rtol=0)


def test_authors_checkpoint_loads_unchanged(authors_checkpoint):
    path, tensors = authors_checkpoint
    model = RubricRewardModel.from_pretrained(path)
    state = model.state_dict()
    assert set(state) == set(tensors)  # exactly the authors' parameter names, nothing missing or extra
    for name, tensor in tensors.items():
        torch.testing.assert_close(state[name], tensor.float(), rtol=0, atol=0)
    assert model.dimension_names == list(MATH_DIMENSIONS) and type(model.model).__name__ == "Qwen2Model"

    # The score, recomputed by hand from the backbone's last hidden state and the stored head tensors
    ids = model.tokenizer("<problem>\nS1=2 S2=5 S3=S1+S2 S3?\n</problem>")["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    expected = torch.stack(
        [
            (torch.softmax(hidden @ tensors[f"dimension_heads.{i}.weight"].float().T
                           + tensors[f"dimension_heads.{i}.bias"].float(), -1) * torch.arange(5.0)).sum()
            for i in range(5)
        ]
    )  # fmt: skip
    derived = (0.2 * expected).sum() / 4
    total = torch.sigmoid(
        hidden @ tensors["total_head.weight"].float().T + tensors["total_head.bias"].float()
    )
    torch.testing.assert_close(out.score, (0.5 * derived + 0.5 * total).reshape(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.expected[0], expected, atol=1e-5, rtol=0)


def test_sharded_authors_checkpoint_loads(tmp_path, authors_checkpoint):
    tensors = write_authors_checkpoint(tmp_path, shard=True)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = RubricRewardModel.from_pretrained(tmp_path)
    torch.testing.assert_close(model.state_dict()["total_head.weight"], tensors["total_head.weight"].float())


def test_our_export_is_the_authors_layout_and_round_trips(tmp_path, tiny_rm_dir):
    model = RubricRewardModel.from_pretrained(tiny_rm_dir)
    config = json.loads((tiny_rm_dir / "config.json").read_text())
    assert config["rm_dimension_names"] == list(MATH_DIMENSIONS)
    assert config["rm_dimension_weights"] == [0.2] * 5
    assert config["rm_num_labels"] == 5 and config["rm_use_total_head"] is True
    assert config["architectures"] == ["Qwen2ForReasonRewardModel"] and config["model_type"] == "qwen2"
    with safe_open(str(tiny_rm_dir / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    heads = {f"dimension_heads.{i}.{p}" for i in range(5) for p in ("weight", "bias")}
    assert heads | {"total_head.weight", "total_head.bias"} <= keys
    assert all(k.startswith("model.") for k in keys - heads - {"total_head.weight", "total_head.bias"})
    assert "model.embed_tokens.weight" in keys and not any("lm_head" in k for k in keys)
    model.save_pretrained(tmp_path)
    again = RubricRewardModel.from_pretrained(tmp_path)
    sequences = encode(model.tokenizer)
    with torch.no_grad():
        ids, mask = pad_batch(sequences, 0)
        torch.testing.assert_close(again(ids, mask).score, model(ids, mask).score, rtol=0, atol=0)


def test_checkpoint_errors_are_clear(tmp_path, authors_checkpoint):
    path, tensors = authors_checkpoint
    with pytest.raises(WeightsNotFoundError, match="no config.json"):
        RubricRewardModel.from_pretrained(tmp_path)
    plain = tmp_path / "plain"
    config = json.loads((path / "config.json").read_text())
    plain.mkdir()
    (plain / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if not k.startswith("rm_")})
    )
    with pytest.raises(ConfigError, match="not a reasoning-RM checkpoint"):
        RubricRewardModel.from_pretrained(plain)
    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(config))
    save_file({k: v for k, v in tensors.items() if k != "total_head.bias"}, str(broken / "model.safetensors"))
    with pytest.raises(WeightsNotFoundError, match="total_head.bias"):
        RubricRewardModel.from_pretrained(broken)
    heavy = tmp_path / "heavy"  # weights that would put the score at 3.0
    heavy.mkdir()
    (heavy / "config.json").write_text(json.dumps({**config, "rm_dimension_weights": [1.0] * 5}))
    with pytest.raises(
        ConfigError, match=r"heavy'?: config.json rm_dimension_weights must be >= 0 and sum to 1"
    ):
        RubricRewardModel.from_pretrained(heavy)
    for weights in ([0.6, 0.6, -0.2, 0.0, 0.0], [0.1] * 5, [float("nan")] * 5):
        with pytest.raises(ConfigError, match=r"rm dimension_weights must be >= 0 and sum to 1"):
            build_reward_model(tiny=TINY, dimension_weights=weights)


def test_lora_trains_adapter_and_heads_then_merges(tmp_path):
    model = build_reward_model(tiny=TINY, lora={"r": 4, "alpha": 8, "dropout": 0.0}, seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        "lora_" in n or n.startswith(("dimension_heads", "total_head")) for n in trainable
    )
    ids, mask = pad_batch(encode(model.tokenizer), 0)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(ids, mask).score.sum().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        before = model(ids, mask).score
        model.merge_lora()
        model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        assert not any("lora" in k or "base_model" in k for k in handle.keys())  # noqa: SIM118 (safe_open is not a dict)
    with torch.no_grad():
        torch.testing.assert_close(
            RubricRewardModel.from_pretrained(tmp_path)(ids, mask).score, before, atol=1e-5, rtol=0
        )


def test_train_top_layers_freezes_the_rest():
    model = build_reward_model(tiny={**TINY, "num_hidden_layers": 3}, train_top_layers=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.layers.2.") for n in trainable) and "model.norm.weight" in trainable
    assert not any(
        n.startswith(("model.layers.0.", "model.layers.1.", "model.embed_tokens")) for n in trainable
    )
    with pytest.raises(ConfigError, match="not both"):
        build_reward_model(tiny=TINY, lora={"r": 2}, train_top_layers=1)


def test_smollm2_backbone_without_lm_head():
    """The real pretrained Llama-architecture backbone (packaged, offline): pooling under both paddings."""
    model = build_reward_model(pretrained="packaged:smollm2-135m-instruct", train_top_layers=2)
    assert type(model.model).__name__ == "LlamaModel" and not hasattr(model.model, "lm_head")
    model.eval()
    from planlift.rubric_rm.inputs import encode_rm_input

    sequences = [
        encode_rm_input(model.tokenizer, "What is 2 + 3?", r, "math", "math", 64)
        for r in ("2 + 3 = 5", "2 + 3 = 6, so the answer is 6 apples.")
    ]
    with torch.no_grad():
        alone, padded = scores_alone_and_padded(model, sequences)
    torch.testing.assert_close(padded["left"], alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(padded["right"], alone, atol=1e-4, rtol=0)


def test_backbone_from_the_bootstrap_planner(trained_bootstrap):
    """rm_backbone=tiny_pretrained: `bootstrap:planner` gives the planner's transformer under fresh heads."""
    from transformers import AutoModelForCausalLM

    cfg = OmegaConf.create({"rm_backbone": {"pretrained": "bootstrap:planner"}})
    resolve_checkpoints(cfg, CheckpointResolver(lambda: trained_bootstrap))
    model = build_reward_model(
        pretrained=cfg.rm_backbone.pretrained, tiny=None, dimension_names=MATH_DIMENSIONS
    )
    planner = AutoModelForCausalLM.from_pretrained(trained_bootstrap.ensure().checkpoint("planner"))
    ours = model.model.state_dict()
    theirs = {k.removeprefix("model."): v for k, v in planner.state_dict().items() if k != "lm_head.weight"}
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert model.tokenizer.encode("S3=4+1=5") == planner_tokens(trained_bootstrap, "S3=4+1=5")
    with pytest.raises(ConfigError, match="bootstrap"):
        build_reward_model(pretrained="bootstrap:planner", tiny=None, dimension_names=MATH_DIMENSIONS)


def planner_tokens(bootstrap, text: str) -> list[int]:
    from planlift.models.loading import load_tokenizer

    return load_tokenizer(str(bootstrap.ensure().checkpoint("planner"))).encode(text)


def test_the_gold_score_is_what_a_perfect_rm_outputs():
    """score_mae compares the RM score with the score of the gold rubric (the formula applied to the gold
    labels and total), so a perfect RM scores 0; the gold total alone is not the score's target."""
    from planlift.rubric_rm import metrics

    weights = [0.1, 0.2, 0.3, 0.2, 0.2]
    labels = torch.tensor([[4, 4, 4, 4, 4], [0, 1, 2, 3, 4], [2, 2, 2, 2, 2]])
    total = torch.tensor([1.0, 0.3, 0.55])
    by_hand = [0.5 * sum(w * x for w, x in zip(weights, row, strict=True)) / 4 + 0.5 * t for row, t in
               zip(labels.tolist(), total.tolist(), strict=True)]  # fmt: skip
    model = build_reward_model(tiny=TINY, dimension_weights=weights)
    gold = model.gold_score(labels, total)
    assert gold.tolist() == pytest.approx(by_hand)
    headless = build_reward_model(tiny=TINY, dimension_weights=weights, use_total_head=False)
    assert headless.gold_score(labels, total).tolist() == pytest.approx(
        [2 * v - t for v, t in zip(by_hand, total.tolist(), strict=True)]
    )
    summary = metrics.summarize_group_scores(
        gold, gold, total, total, torch.zeros(3, 5, 5), labels, ["positive"] * 3, 3, list(MATH_DIMENSIONS)
    )
    assert summary["score_mae"] == summary["total_mae"] == 0.0
    assert metrics.errors(gold, total, "x")["x_mae"] > 0.05  # the old comparison's floor


def test_bf16_true_runs_the_heads_in_bf16():
    """Lightning's bf16-true casts the whole module (heads included) to bf16: the heads must then take bf16
    features, not float32 ones (`mat1 and mat2 must have the same dtype`)."""
    from pytorch_lightning.plugins.precision import HalfPrecision

    precision = HalfPrecision("bf16-true")
    model = precision.convert_module(build_reward_model(tiny=TINY, seed=0)).eval()
    assert model.dimension_heads[0].weight.dtype == torch.bfloat16
    ids, mask = pad_batch(encode(model.tokenizer), pad_id=0, side="left")
    with torch.no_grad(), precision.forward_context():
        out = model(ids, mask, return_hidden=True)
        token_logits, token_total = model.heads(out.hidden)
    assert out.dimension_logits.dtype == torch.float32 and token_logits.dtype == torch.float32
    assert token_logits.shape == (3, ids.shape[1], 5, 5) and token_total.shape == ids.shape
    for value in (out.dimension_logits, out.score, token_logits, token_total):
        assert torch.isfinite(value).all()
    top = torch.full((1, 5), 4.0)  # every dimension at the top label: the derived score is exactly 1
    assert model.derived_score(top).item() == 1.0  # the weights are not the cast module's (0.2 -> 0.2002)


def test_heads_run_in_float32_under_autocast():
    """Under bf16-mixed the backbone runs under autocast (its Linear layers in bf16); the float32 heads run
    outside it, in float32."""
    model = build_reward_model(tiny=TINY, seed=0).eval()
    ids, mask = pad_batch(encode(model.tokenizer), pad_id=0, side="right")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask, return_hidden=True)
        token_logits, token_total = model.heads(out.hidden)
    assert out.dimension_logits.dtype == out.total.dtype == out.score.dtype == torch.float32
    assert token_logits.dtype == token_total.dtype == torch.float32
    with torch.no_grad():  # the same float32 features through the heads without autocast: the same logits
        exact, _ = model.heads(out.hidden.float())
    torch.testing.assert_close(token_logits, exact, rtol=0, atol=0)
