import pytest

from planlift.errors import ConfigError, WeightsNotFoundError
from planlift.models import build_char_tokenizer, load_policy
from planlift.models.loading import (
    load_model_and_tokenizer,
    load_tokenizer,
    locate_checkpoint,
)

TEXT = "S1=3 S2=7 S3=S1+S2 S3?\n<reasoning>\nS3=3+7=0\n</reasoning>\nanswer=0"


def test_char_tokenizer_round_trips_through_save_pretrained(tmp_path):
    tokenizer = build_char_tokenizer()
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(TEXT)  # one token per character, spaces and newlines included
    assert tokenizer.decode(ids) == TEXT
    tokenizer.save_pretrained(tmp_path)
    reloaded = load_tokenizer(str(tmp_path))
    assert reloaded(TEXT, add_special_tokens=False)["input_ids"] == ids
    assert reloaded.decode(ids) == TEXT
    assert (reloaded.pad_token, reloaded.eos_token, reloaded.padding_side) == ("<pad>", "<eos>", "left")


def test_checkpoint_dir_with_qwen2_config_keeps_the_char_tokenizer(tiny_checkpoint):
    # transformers 5's AutoTokenizer would rebuild this as Qwen2's byte-level tokenizer and drop spaces
    _, tokenizer = load_model_and_tokenizer(str(tiny_checkpoint), "model.pretrained")
    assert tokenizer.decode(tokenizer(TEXT, add_special_tokens=False)["input_ids"]) == TEXT


def test_hub_id_missing_offline_is_a_clear_error():
    with pytest.raises(
        WeightsNotFoundError, match="weights not found offline.*model.pretrained='Qwen/Qwen2.5-7B'"
    ):
        locate_checkpoint("Qwen/Qwen2.5-7B", "model.pretrained")


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="executor.pretrained"):
        locate_checkpoint(str(tmp_path / "nope"), "executor.pretrained")


def test_lora_policy_trains_only_the_adapter(tiny_checkpoint):
    policy = load_policy(str(tiny_checkpoint), lora={"r": 4, "alpha": 8, "dropout": 0.0})
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(ConfigError, match="model.lora"):
        load_policy(str(tiny_checkpoint), lora={"r": 0})
