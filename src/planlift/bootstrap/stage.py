"""The bootstrap stage: tiny models that make the CPU default a real experiment.

(a) The executor learns to read `problem + reasoning` and answer. It is trained on gold traces and on
    the bare problem, so it is strong with a correct trace and weak alone: the uplift is real.
(b) The planner is warm-started for a short while: it writes the format but makes arithmetic slips,
    leaving room for RL below the executor-with-gold-trace ceiling. With `planner_mixture` it is
    warm-started on traces of several kinds (faithful, early_stop, wrong_state, leaked; see
    `ProceduralTask.reasoning`) in the given proportions, so that its samples differ in kind and in
    correctness and GRPO has behaviours to select among; `executor_mixture` does the same for the
    executor's with-reasoning examples (default: gold traces only).

Both are saved as Hugging Face directories under `cache_dir/<hash of the config>/`; a run whose
config hashes the same loads them instead of training. A file lock lets parallel processes (DDP ranks,
sweep jobs) share one bootstrap. `metrics.json` holds the numbers the stage measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from planlift.errors import ConfigError
from planlift.tasks.base import REASONING_CLOSE, Task

log = logging.getLogger(__name__)

ROLES = ("executor", "planner")
# Bump when the bootstrap's training code changes what it produces.
FORMAT_VERSION = 3
# Samples per problem for the warm-started planner's pass@G (GRPO's default group size).
PASS_AT = 4


@dataclass(frozen=True)
class BootstrapArtifacts:
    directory: Path
    metrics: dict[str, Any]

    def checkpoint(self, role: str) -> Path:
        if role not in ROLES:
            raise ConfigError(f"unknown bootstrap role {role!r}; known: {list(ROLES)}")
        return self.directory / role


@dataclass
class SFTSettings:
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"bootstrap SFT settings invalid: {self}")


class Bootstrap:
    """Trains (or loads from cache) the tiny executor and warm-started planner for `task`.

    Args:
        task: the run's task (its gold traces are the supervision).
        cache_dir: where bootstraps are kept, one directory per config hash.
        architecture: kwargs of `build_tiny_qwen2` (hidden_size, num_hidden_layers, ...).
        executor / planner: SFT settings per role (steps, batch_size, lr, warmup_steps, weight_decay),
            kept in `self.sft[role]`.
        no_reasoning_fraction: share of executor examples shown without a trace (it learns a prior there).
        planner_mixture / executor_mixture: {reasoning kind: weight} for the warm-start traces (null: gold
            traces only); kinds are the task's (`ProceduralTask.reasoning`).
        shared_base: train one model on both roles' examples (with the planner's SFT settings) and start
            the executor and the planner from it, as when both come from one pretrained base. The executor's
            share of the work is the same skill as writing a step line, so it learns it from both roles' data.
        eval_problems: validation problems for the reported numbers.
        max_length: SFT sequence cap in tokens.
    """

    def __init__(
        self,
        task: Task,
        cache_dir: str,
        architecture: dict[str, Any] | None = None,
        executor: dict[str, Any] | None = None,
        planner: dict[str, Any] | None = None,
        no_reasoning_fraction: float = 0.5,
        planner_mixture: dict[str, float] | None = None,
        executor_mixture: dict[str, float] | None = None,
        shared_base: bool = False,
        eval_problems: int = 200,
        max_length: int = 512,
        seed: int = 0,
        accelerator: str = "auto",
        progress_bar: bool = True,
    ) -> None:
        self.task = task
        self.cache_dir = Path(cache_dir)
        self.architecture = dict(architecture or {})
        self.sft = {"executor": SFTSettings(**(executor or {})), "planner": SFTSettings(**(planner or {}))}
        if not 0 <= no_reasoning_fraction <= 1:
            raise ConfigError(
                f"bootstrap.no_reasoning_fraction must be in [0, 1], got {no_reasoning_fraction}"
            )
        self.no_reasoning_fraction = no_reasoning_fraction
        self.planner_mixture = _mixture(task, "planner_mixture", planner_mixture)
        self.executor_mixture = _mixture(task, "executor_mixture", executor_mixture)
        self.shared_base = shared_base
        self.eval_problems = eval_problems
        self.max_length = max_length
        self.seed = seed
        self.accelerator = accelerator
        self.progress_bar = progress_bar
        self._artifacts: BootstrapArtifacts | None = None
        self._devices: set[str] = set()

    def config(self) -> dict[str, Any]:
        """Everything that determines the trained models."""
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task.fingerprint(),
            "architecture": self.architecture,
            "executor": vars(self.sft["executor"]),
            "planner": vars(self.sft["planner"]),
            "no_reasoning_fraction": self.no_reasoning_fraction,
            "planner_mixture": self.planner_mixture,
            "executor_mixture": self.executor_mixture,
            "shared_base": self.shared_base,
            "eval_problems": self.eval_problems,
            "max_length": self.max_length,
            "seed": self.seed,
        }

    @property
    def ensured(self) -> bool:
        """Whether this run used the bootstrap (a model or executor named `bootstrap:<role>`)."""
        return self._artifacts is not None

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def directory(self) -> Path:
        return self.cache_dir / self.key

    def ensure(self) -> BootstrapArtifacts:
        """Load the cached bootstrap, or train it (once, under a file lock)."""
        if self._artifacts is not None:
            return self._artifacts
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory) + ".lock"):
            metrics_path = self.directory / "metrics.json"
            cached = metrics_path.exists()
            if not cached:
                self._build()
            metrics = json.loads(metrics_path.read_text())
            if cached:
                built_with = metrics.get("built_with")
                log.info(
                    "bootstrap: using cached models in %s (%s)",
                    self.directory,
                    _describe(built_with) if built_with else "built before planlift recorded its numerics",
                )
            self._artifacts = BootstrapArtifacts(self.directory, metrics)
        return self._artifacts

    def _build(self) -> None:
        from planlift.models.char_tokenizer import build_char_tokenizer

        log.info("bootstrap: training tiny executor and planner into %s", self.directory)
        start = time.perf_counter()
        staging = self.directory.with_name(self.directory.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        tokenizer = build_char_tokenizer()
        # every role's examples before any training: a task that cannot warm-start a role fails at once
        examples = {role: self._examples(role, tokenizer) for role in ROLES}
        seconds = {}
        for role in ("shared",) if self.shared_base else ROLES:
            role_start = time.perf_counter()
            model = self._train(role, examples, tokenizer, staging / "logs")
            for saved_as in ROLES if role == "shared" else (role,):
                model.save_pretrained(staging / saved_as)
                tokenizer.save_pretrained(staging / saved_as)
            seconds[role] = time.perf_counter() - role_start
        metrics = self._measure(staging)
        metrics["built_with"] = _numerics(self._devices)
        metrics["train_seconds"] = seconds
        metrics["total_seconds"] = time.perf_counter() - start
        metrics["config"] = self.config()
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        shutil.rmtree(self.directory, ignore_errors=True)
        staging.rename(self.directory)
        log.info(
            "bootstrap: executor alone %.3f | executor with gold trace %.3f | planner -> executor %.3f "
            "(%.0fs; %s)",
            metrics["executor_alone"],
            metrics["executor_gold"],
            metrics["planner_executor"],
            metrics["total_seconds"],
            _describe(metrics["built_with"]),
        )

    def _examples(self, role: str, tokenizer):
        from planlift.bootstrap.sft import SFTExample
        from planlift.generation import render_prompt

        examples = []
        for problem in self.task.problems("train"):
            rng = random.Random(f"{self.seed}/{problem.id}")
            if role == "executor":
                # Each problem once, with a trace or bare (seen twice, the model stalls at chance).
                bare = rng.random() < self.no_reasoning_fraction
                reasoning = None if bare else self._reasoning(problem, self.executor_mixture, rng)
                prompt = render_prompt(tokenizer, self.task.executor_prompt(problem, reasoning), None)
                examples.append(SFTExample(prompt, self.task.executor_target(problem)))
            else:
                reasoning = self._reasoning(problem, self.planner_mixture, rng)
                if reasoning is None:
                    continue
                prompt = render_prompt(tokenizer, self.task.planner_prompt(problem), None)
                examples.append(SFTExample(prompt, f"{reasoning}{REASONING_CLOSE}"))
        if not examples:
            raise ConfigError(
                f"bootstrap: task {self.task.name!r} gives no {role} training examples (no gold reasoning): "
                "the tiny models (model=tiny, executor=tiny) are warm-started on it. Train on this task with "
                "real models, e.g. model=smollm2 executor=smollm2 (experiment=mbpp_smollm2 for MBPP)"
            )
        return examples

    def _reasoning(self, problem, mixture: dict[str, float] | None, rng: random.Random) -> str | None:
        """A warm-start trace: gold without a mixture, else one of the mixture's kinds drawn by weight."""
        if mixture is None:
            return self.task.gold_reasoning(problem)
        kind = rng.choices(list(mixture), weights=list(mixture.values()))[0]
        return self.task.reasoning(problem, kind, rng)

    def _train(self, role: str, examples: dict[str, list], tokenizer, log_dir: Path):
        import pytorch_lightning as pl
        from pytorch_lightning.loggers import TensorBoardLogger

        from planlift.bootstrap.sft import SFTDataset, SupervisedFineTuning
        from planlift.callbacks.progress import StepProgressBar
        from planlift.models.tiny import build_tiny_qwen2

        if role == "shared":
            settings, seed = self.sft["planner"], self.seed
            examples = examples["executor"] + examples["planner"]
        else:
            settings, seed = self.sft[role], self.seed + ROLES.index(role)
            examples = examples[role]
        model = build_tiny_qwen2(tokenizer, seed=seed, **self.architecture)
        if settings.steps == 0:
            return model
        dataset = SFTDataset(examples, tokenizer, self.max_length)
        module = SupervisedFineTuning(
            model, settings.lr, settings.steps, settings.warmup_steps, settings.weight_decay
        )
        trainer = pl.Trainer(
            max_steps=settings.steps,
            accelerator=self.accelerator,
            devices=1,
            logger=TensorBoardLogger(str(log_dir), name=role, default_hp_metric=False),
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=self.progress_bar,
            callbacks=[StepProgressBar(f"bootstrap: {role} SFT")] if self.progress_bar else [],
            log_every_n_steps=10,
        )
        trainer.fit(module, dataset.loader(settings.batch_size, seed))
        self._devices.add(str(trainer.strategy.root_device.type))
        return module.model.cpu().eval()

    def _measure(self, directory: Path) -> dict[str, Any]:
        """Greedy accuracies on validation problems: executor alone, with gold traces, after the planner."""
        import torch

        from planlift.executors.hf import HFExecutor
        from planlift.grpo.rollout import sample_rollout
        from planlift.judging import BaselineCache, judge_reasonings, pass_at_k, summarize
        from planlift.models.policy import load_policy

        problems = list(self.task.problems("validation"))[: self.eval_problems]
        executor = HFExecutor(str(directory / "executor"), max_new_tokens=16, device="cpu")
        planner = load_policy(str(directory / "planner"))
        cache = BaselineCache()
        gold = summarize(
            judge_reasonings(
                self.task, executor, problems, [self.task.gold_reasoning(p) for p in problems], cache
            )
        )
        rollout = sample_rollout(
            planner, self.task, problems, 1, greedy=True, max_new_tokens=self.max_length // 2
        )
        planned = summarize(
            judge_reasonings(
                self.task, executor, problems, [self.task.extract_reasoning(t) for t in rollout.texts], cache
            )
        )
        # The warm-started planner's headroom: G samples at GRPO's temperature, judged greedily. The
        # sampler draws from torch's global stream, whose start differs per process unless seeded; its
        # own seed makes the numbers the bootstrap's (whoever builds it), leaving the caller's stream as is.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            sampled = sample_rollout(
                planner, self.task, problems, PASS_AT, max_new_tokens=self.max_length // 2
            )
        sampled_records = judge_reasonings(
            self.task,
            executor,
            [p for p in problems for _ in range(PASS_AT)],
            [self.task.extract_reasoning(t) for t in sampled.texts],
            cache,
        )
        sampled_summary = summarize(sampled_records)
        return {
            "eval_problems": len(problems),
            "executor_alone": gold["baseline_acc"],
            "executor_gold": gold["e2e_acc"],
            "planner_executor": planned["e2e_acc"],
            "planner_trace": {k: v for k, v in planned.items() if k.startswith("trace/")},
            "planner_sampled": {
                "pass@1": sampled_summary["e2e_acc"],
                f"pass@{PASS_AT}": pass_at_k(sampled_records, PASS_AT),
                **{k: v for k, v in sampled_summary.items() if k.startswith("trace/kind/")},
            },
        }


def _mixture(task: Task, key: str, mixture: dict[str, float] | None) -> dict[str, float] | None:
    """Validated {kind: weight} (weights >= 0, some > 0), in the task's kind order; None for a task without
    reasoning kinds (logged)."""
    if mixture is None:
        return None
    kinds = task.reasoning_kinds
    if not kinds:  # the preset's mixture is for the procedural task; others warm-start on gold traces
        log.warning("bootstrap.%s ignored: task %r has no reasoning kinds (gold traces only)", key, task.name)
        return None
    unknown = sorted(set(mixture) - set(kinds))
    if unknown:
        raise ConfigError(f"bootstrap.{key} has unknown kinds {unknown}; known: {list(kinds)}")
    if any(weight < 0 for weight in mixture.values()) or not sum(mixture.values()) > 0:
        raise ConfigError(f"bootstrap.{key} weights must be >= 0 with a positive sum, got {dict(mixture)}")
    return {kind: float(mixture[kind]) for kind in kinds if mixture.get(kind, 0) > 0}


def _numerics(devices: set[str]) -> dict[str, Any]:
    """What the trained floats depend on besides the config (not part of the cache key): the same config
    trains different weights with other kernels. On x86 CPUs torch picks its vector kernels by instruction
    set (`cpu_capability`): the reference bootstrap measured 0.155 greedy planner -> executor on AVX2 and
    0.120 on AVX-512 (docs/learning.md, "Reproducing the numbers")."""
    import platform

    import torch

    return {
        "torch": torch.__version__,
        "devices": sorted(devices),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }


def _describe(built_with: dict[str, Any]) -> str:
    """One line for the log: where the bootstrap's weights were trained and with which kernels."""
    devices = "+".join(built_with.get("devices") or ["?"])
    return (
        f"built on {devices}, torch {built_with.get('torch')}, CPU kernels {built_with.get('cpu_capability')}"
    )
