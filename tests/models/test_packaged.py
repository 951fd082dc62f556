import pytest

from planlift.errors import ConfigError
from planlift.models.loading import load_model_and_tokenizer
from planlift.models.packaged import packaged_checkpoint


def test_smollm2_converts_once_and_loads_offline(tmp_path):
    path = packaged_checkpoint("smollm2-135m-instruct", cache_dir=tmp_path)
    assert (path / "config.json").is_file()
    assert packaged_checkpoint("smollm2-135m-instruct", cache_dir=tmp_path) == path  # cached
    model, tokenizer = load_model_and_tokenizer(str(path), "executor.pretrained")
    assert model.config.model_type == "llama"
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tokenizer.chat_template is not None


def test_unknown_packaged_name():
    with pytest.raises(ConfigError, match="packaged checkpoint"):
        packaged_checkpoint("gpt-7")
