import json

import pytest
import torch

from planlift.bootstrap import Bootstrap
from planlift.errors import ConfigError
from planlift.models import load_policy
from planlift.models.loading import load_model_and_tokenizer


def same_config(bootstrap: Bootstrap, **changes) -> Bootstrap:
    kwargs = {
        "task": bootstrap.task,
        "cache_dir": str(bootstrap.cache_dir),
        "architecture": bootstrap.architecture,
        "executor": vars(bootstrap.sft["executor"]),
        "planner": vars(bootstrap.sft["planner"]),
        "eval_problems": bootstrap.eval_problems,
        "accelerator": "cpu",
        "progress_bar": False,
    }
    kwargs.update(changes)
    return Bootstrap(**kwargs)


def test_bootstrap_writes_models_and_the_three_numbers(trained_bootstrap):
    artifacts = trained_bootstrap.ensure()
    metrics = json.loads((artifacts.directory / "metrics.json").read_text())
    for key in ("executor_alone", "executor_gold", "planner_executor"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["eval_problems"] == 20
    assert metrics["config"] == trained_bootstrap.config()
    assert metrics["built_with"]["devices"] == ["cpu"]  # what else the weights depend on: kernels, torch
    assert metrics["built_with"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert metrics["built_with"]["torch"] == torch.__version__
    model, _ = load_model_and_tokenizer(str(artifacts.checkpoint("executor")), "executor.pretrained")
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64
    assert load_policy(str(artifacts.checkpoint("planner"))).model.config.num_hidden_layers == 2
    with pytest.raises(ConfigError, match="role"):
        artifacts.checkpoint("critic")


def test_same_config_loads_from_cache_without_training(trained_bootstrap, monkeypatch):
    def no_training(self):
        raise AssertionError("the cached bootstrap was retrained")

    monkeypatch.setattr(Bootstrap, "_build", no_training)
    again = same_config(trained_bootstrap)
    assert again.key == trained_bootstrap.key
    assert again.ensure().metrics == trained_bootstrap.ensure().metrics


def test_config_changes_change_the_cache_key(trained_bootstrap):
    assert (
        same_config(trained_bootstrap, planner={"steps": 31, "batch_size": 16}).key != trained_bootstrap.key
    )
    assert same_config(trained_bootstrap, no_reasoning_fraction=0.3).key != trained_bootstrap.key


def test_invalid_settings(trained_bootstrap):
    with pytest.raises(ConfigError, match="no_reasoning_fraction"):
        same_config(trained_bootstrap, no_reasoning_fraction=1.5)


def test_planner_mixture_draws_kinds_in_proportion(tmp_path):
    from collections import Counter

    from planlift.models.char_tokenizer import build_char_tokenizer
    from planlift.tasks import ProceduralTask

    task = ProceduralTask(executor_steps=1, sizes={"train": 2000, "validation": 10, "test": 10})
    mixture = {"faithful": 0.2, "early_stop": 0.1, "wrong_state": 0.1, "leaked": 0.6}
    bootstrap = Bootstrap(task, cache_dir=str(tmp_path), planner_mixture=mixture)
    examples = bootstrap._examples("planner", build_char_tokenizer())
    problems = {p.text: p for p in task.problems("train")}
    kinds = Counter(
        task.analyze(problems[e.prompt.split("\n")[0]], task.extract_reasoning(e.target)).kind
        for e in examples
    )
    assert len(examples) == 2000
    for kind, trace_kind in [("faithful", "faithful"), ("leaked", "leaked"), ("early_stop", "under")]:
        assert kinds[trace_kind] / 2000 == pytest.approx(mixture[kind], abs=0.04)
    assert kinds["wrong_state"] / 2000 == pytest.approx(0.1, abs=0.04)
    assert bootstrap.key != Bootstrap(task, cache_dir=str(tmp_path)).key


def test_mixture_errors_name_the_key(trained_bootstrap):
    with pytest.raises(ConfigError, match=r"bootstrap\.planner_mixture has unknown kinds \['sloppy'\]"):
        same_config(trained_bootstrap, planner_mixture={"sloppy": 1.0})
    with pytest.raises(ConfigError, match=r"bootstrap\.executor_mixture weights"):
        same_config(trained_bootstrap, executor_mixture={"faithful": -1.0, "leaked": 2.0})
    from planlift.tasks import GSM8KTask

    gsm8k = Bootstrap(GSM8KTask.__new__(GSM8KTask), cache_dir="unused", planner_mixture={"faithful": 1.0})
    assert gsm8k.planner_mixture is None  # no kinds: gold traces, with a warning


def test_sampled_headroom_does_not_depend_on_the_callers_random_stream(trained_bootstrap, monkeypatch):
    """torch's global generator starts from a different seed in every process: the bootstrap's pass@k must
    come from its own seed (else metrics.json differs between two builds of the same weights)."""
    import planlift.grpo.rollout as rollout_module

    sampled_texts = []
    real = rollout_module.sample_rollout

    def recording(policy, task, problems, group_size, **kwargs):
        rollout = real(policy, task, problems, group_size, **kwargs)
        if not kwargs.get("greedy"):
            sampled_texts.append(rollout.texts)
        return rollout

    monkeypatch.setattr(rollout_module, "sample_rollout", recording)
    measured = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        measured.append(trained_bootstrap._measure(trained_bootstrap.directory))
        after = torch.rand(3)
        torch.manual_seed(caller_seed)
        assert torch.equal(after, torch.rand(3)), "the caller's stream was moved"
    assert sampled_texts[0] == sampled_texts[1]
    assert measured[0]["planner_sampled"] == measured[1]["planner_sampled"]
    # The check can fail: unseeded, the two callers' streams give different samples.
    planner = load_policy(str(trained_bootstrap.directory / "planner"))
    problems = list(trained_bootstrap.task.problems("validation"))[:5]
    unseeded = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        unseeded.append(real(planner, trained_bootstrap.task, problems, 4, max_new_tokens=64).texts)
    assert unseeded[0] != unseeded[1]


def test_a_task_without_gold_reasoning_fails_before_any_training(tmp_path):
    """MBPP has no gold reasoning to warm-start the tiny planner on: the error comes before the executor's
    SFT (which would otherwise run in vain), and names the way out."""
    from planlift.sandbox import Sandbox
    from planlift.tasks import MBPPTask

    task = MBPPTask(sandbox=Sandbox(workers=1), cache_dir=str(tmp_path / "code"), sizes={"train": 3})
    bootstrap = Bootstrap(task, cache_dir=str(tmp_path / "bootstrap"), progress_bar=False)
    with pytest.raises(ConfigError, match=r"gives no planner training examples .*experiment=mbpp_smollm2"):
        bootstrap.ensure()
    assert not (tmp_path / "bootstrap" / f"{bootstrap.key}.tmp" / "logs").exists()  # no SFT ran
