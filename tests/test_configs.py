"""Every option of every config group composes, and every `_target_` binds its keys (no weights load)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

import planlift.runtime  # registers resolvers, sets PROJECT_ROOT; check_devices
from planlift import config_types
from planlift.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
SKIP_GROUPS = {"hydra", "local"}
# groups of the reward-model entry points (build_groups / train_rm), composed by tests/rm/test_rm_configs.py
SKIP_GROUPS |= {"groups", "labeler", "rm_backbone", "rm_data", "rm_stage"}
# Keyword arguments the entry point passes at instantiation time, per target.
RUNTIME_KWARGS = {
    "planlift.grpo.GRPOModule": {"policy", "reward", "task"},
    "planlift.rewards.ExecutorGroundedReward": {"executor", "task", "rm"},
    "planlift.data.ProblemDataModule": {"task"},
    "planlift.bootstrap.Bootstrap": {"task"},
    "pytorch_lightning.Trainer": {"logger", "callbacks"},
    "planlift.rubric_rm.training.RubricRMModule": {"model"},
    "planlift.rubric_rm.data.GroupsDataModule": {"tokenizer", "dimension_names"},
}


def options() -> list[tuple[str, str]]:
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group != "." and group.split("/")[0] not in SKIP_GROUPS:
            found.append((group, path.stem))
    return found


def compose_with(
    overrides: list[str], tmp_path: Path, config_dir: Path = CONF, config_name: str = "train"
) -> DictConfig:
    """One job's config (train.yaml, or e.g. a sweep file with conf/ on its search path), resolved."""
    GlobalHydra.instance().clear()
    search = [] if config_dir == CONF else [f"hydra.searchpath=[file://{CONF}]"]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name, overrides=[*search, *overrides], return_hydra_config=True)
    # fill what Hydra sets only when a job runs, then resolve every interpolation
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    cfg.hydra.job.override_dirname = ",".join(overrides)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_readonly(cfg.hydra, False)
    OmegaConf.resolve(cfg)
    return cfg


def load_entry_point(name: str = "train", folder: str = "src"):
    """<folder>/<name>.py as a module: the entry points (src/) and scripts/ are files, not part of the
    installed package."""
    import importlib.util

    path = CONF.parent / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"planlift_{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locate(target: str):
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        parent, _, cls = module.rpartition(".")
        return getattr(getattr(importlib.import_module(parent), cls), name)


def check_targets(node, path: str = "") -> int:
    """Bind every `_target_` node's keys to its signature, recursively. Returns how many were checked."""
    checked = 0
    if isinstance(node, DictConfig):
        if "_target_" in node:
            target = node["_target_"]
            kwargs = {k: v for k, v in node.items() if not str(k).startswith("_")}
            signature = inspect.signature(locate(target))
            injected = dict.fromkeys(RUNTIME_KWARGS.get(target, ()))
            try:
                if node.get("_partial_", False):
                    signature.bind_partial(**kwargs)
                else:
                    signature.bind(**kwargs, **{k: v for k, v in injected.items() if k not in kwargs})
            except TypeError as error:
                raise AssertionError(f"{path or '<root>'} ({target}): {error}") from None
            checked += 1
        for key, value in node.items():
            if key != "hydra":
                checked += check_targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, value in enumerate(node):
            checked += check_targets(value, f"{path}[{index}]")
    return checked


def test_groups_are_found():
    groups = {group for group, _ in options()}
    for expected in (
        "model",
        "executor",
        "reward",
        "rm",
        "task",
        "hardware",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "debug",
        "algorithm",
        "data",
        "bootstrap",
    ):
        assert expected in groups


def test_default_config_binds(tmp_path):
    cfg = compose_with([], tmp_path)
    assert check_targets(cfg) >= 10


@pytest.mark.parametrize(
    ("config_name", "run_dir"),
    [
        ("train", "outputs/runs/"),
        ("evaluate", "outputs/eval/"),
        ("train_rm", "outputs/rm_runs/"),
        ("eval_rm", "outputs/rm_eval/"),
        ("serve_rm", "outputs/serve_rm/"),
        ("build_groups", "outputs/groups/procedural"),
    ],
)
def test_each_entry_point_writes_where_its_launch_comment_says(config_name, run_dir, tmp_path):
    cfg = compose_with([], tmp_path, config_name=config_name)
    assert str(cfg.hydra.run.dir).startswith(f"{cfg.paths.log_dir[: -len('outputs')]}{run_dir}")
    assert run_dir.rstrip("/").split("/")[-1] in (CONF / f"{config_name}.yaml").read_text()


@pytest.mark.parametrize(("group", "option"), options())
def test_every_option_composes_and_binds(group, option, tmp_path):
    cfg = compose_with([f"{group}={option}"], tmp_path)
    assert check_targets(cfg) >= 10
    assert HydraConfig.get().runtime.choices[group] == option
    config_types.check_targets(cfg, [key for key in cfg if key != "hydra"])  # what src/train.py checks


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.num_generations=four", "algorithm.num_generations must be an integer, got 'four'"),
        ("reward.repeats=2.5", "reward.repeats must be an integer, got 2.5"),
        ("reward.pool_e2e=1", "reward.pool_e2e must be true or false, got 1"),
        ("algorithm.tis_cap=high", r"algorithm.tis_cap must be a number \(or null\), got 'high'"),
        ("data.problems_per_step=[2]", r"data.problems_per_step must be an integer, got \[2\]"),
        ("trainer.max_steps=ten", "trainer.max_steps must be an integer, got 'ten'"),
    ],
)
def test_a_value_of_the_wrong_kind_names_its_key(override, message, tmp_path):
    """Checked against the annotations of the class the node configures, before any of them is built;
    Hydra would report a TypeError from inside it, for the whole group (`full_key: algorithm`)."""
    cfg = compose_with([override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        config_types.check_targets(cfg, [key for key in cfg if key != "hydra"])


def test_a_whole_number_written_as_a_float_becomes_the_integer_the_class_declares(tmp_path):
    """`range(4.0)` would fail inside the module; a float where a float is wanted stays one."""
    overrides = ["algorithm.num_generations=4.0", "trainer.max_steps=1e4", "algorithm.kl_coef=1"]
    cfg = compose_with(overrides, tmp_path)
    config_types.check_targets(cfg, [key for key in cfg if key != "hydra"])
    assert type(cfg.algorithm.num_generations) is int and cfg.algorithm.num_generations == 4
    assert type(cfg.trainer.max_steps) is int and cfg.trainer.max_steps == 10_000
    assert type(cfg.algorithm.kl_coef) is int  # an int is a number: left as written


def test_the_seed_and_learning_rate_keys_src_train_checks(tmp_path):
    """src/train.py checks these keys before any model loads: every option passes, bad values name the key."""
    for option in [None, *sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))]:
        cfg = compose_with([f"experiment={option}"] if option else [], tmp_path)
        planlift.runtime.check_seed(cfg.seed)
        planlift.runtime.check_learning_rate(cfg, "algorithm.optimizer.lr")
    with pytest.raises(ConfigError, match="seed must be an integer, got 'abc'"):
        planlift.runtime.check_seed(compose_with(["seed=abc"], tmp_path).seed)
    cfg = compose_with(["algorithm.optimizer.lr=-1e-4"], tmp_path)
    with pytest.raises(ConfigError, match="algorithm.optimizer.lr must be > 0, got -0.0001"):
        planlift.runtime.check_learning_rate(cfg, "algorithm.optimizer.lr")


def test_unknown_option_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="reward/magic"):
        compose_with(["reward=magic"], tmp_path)


def test_reward_options_select_their_mode(tmp_path):
    for mode in ("exec_only", "grounded", "uplift_only", "rm_only", "code_gated"):
        assert compose_with([f"reward={mode}"], tmp_path).reward.mode == mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a machine without a GPU gives")
def test_gpu_hardware_without_a_gpu_fails_before_any_model_is_built(tmp_path):
    for hardware in ("gpu", "fsdp", "ddp"):
        with pytest.raises(ConfigError, match=r"trainer\.accelerator=gpu .* sees 0 CUDA device"):
            planlift.runtime.check_devices(compose_with([f"hardware={hardware}"], tmp_path))
    for hardware in ("cpu", "ddp_sim", "fsdp_sim", "qlora4bit"):  # qlora4bit: accelerator auto
        planlift.runtime.check_devices(compose_with([f"hardware={hardware}"], tmp_path))
