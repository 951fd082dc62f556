"""Process set-up shared by the entry points: project root, config resolvers, threads, user errors."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from planlift.errors import ConfigError, PlanliftError

log = logging.getLogger("planlift")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _run_name(override_dirname: str) -> str:
    """TensorBoard run names come from the command-line overrides ("reward=grounded,seed=1"); a slash
    (a path or URL override) would nest directories, so it becomes "_". A name past 200 characters (a file
    name's limit is 255) keeps `seed` and `task.length` first (src/compare.py pools seeds and tabulates
    lengths by them), then the start of the rest and a hash of it: the seeds of one arm share that part."""
    name = (override_dirname or "default").replace("/", "_")
    if len(name) <= 200:
        return name
    import hashlib

    parts = name.split(",")
    kept = [p for p in parts if p.split("=", 1)[0] in ("seed", "task.length")]
    rest = ",".join(p for p in parts if p not in kept)
    head = ",".join(kept)
    room = max(180 - len(head), 20)
    return ",".join(filter(None, [head, f"{rest[:room]}-{hashlib.sha1(rest.encode()).hexdigest()[:10]}"]))


def _tensorboard_dir(output_dir: str) -> str:
    """One event tree per sweep: in a multirun every job logs under `<sweep dir>/tensorboard/<run name>`
    (so `tensorboard --logdir <sweep dir>` and src/compare.py see every arm); a single run under its own dir."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(Path(HydraConfig.get().sweep.dir) / "tensorboard")
    return str(Path(output_dir) / "tensorboard")


# arithmetic for settings that scale with another (sweeps/length_collapse.yaml: token budgets per N)
_ARITHMETIC = {"planlift.mul": lambda a, b: int(a) * int(b), "planlift.max": lambda a, b: max(int(a), int(b))}
for _name, _function in _ARITHMETIC.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _function)
if not OmegaConf.has_resolver("planlift.run_name"):
    OmegaConf.register_new_resolver("planlift.run_name", _run_name)
if not OmegaConf.has_resolver("planlift.tensorboard_dir"):
    OmegaConf.register_new_resolver("planlift.tensorboard_dir", _tensorboard_dir)


def checkpoint_to_resume(cfg: DictConfig, kind: str | None = None) -> str | None:
    """`cfg.ckpt_path` when given; else, with `auto_resume`, the newest checkpoint the job left in its own
    output dir (a requeued SLURM job continues); else None (a fresh run). A checkpoint that is missing, that
    torch.save did not finish writing, or (with `kind`: "planner" or "rm") that another entry point wrote
    is a ConfigError naming it, before any model loads."""
    if cfg.get("ckpt_path"):
        return readable_checkpoint(str(cfg.ckpt_path), "ckpt_path", kind)
    if not cfg.get("auto_resume", False):
        return None
    found = resume_checkpoint(cfg.paths.output_dir)
    if found:
        log.info("resuming from %s", found)
        readable_checkpoint(found, "auto_resume found", kind)
    return found


# what each entry point's LightningModule saves, told apart by the prefix of its weights (`state_dict`
# keys, also in checkpoints from before the `planlift` resume state, LoRA ones included)
_CHECKPOINT_KINDS = {
    "planner": ("planner", "a planner-training checkpoint (src/train.py)"),
    "rm": ("model", "a reasoning-RM training checkpoint (src/train_rm.py)"),
}


# A distributed checkpoint (ModelParallelStrategy with save_distributed_checkpoint=true) is a directory:
# torch.distributed.checkpoint's shards and their index, and Lightning's meta.pt (the rest of the state),
# which rank 0 writes once every shard is saved.
_DISTRIBUTED_INDEX = ".metadata"
_DISTRIBUTED_REST = "meta.pt"


def _incomplete(path: Path) -> str | None:
    """Why `path` is no complete checkpoint, or None when it is one: a file in torch.save's zip format (its
    central directory at the end: a truncated file has none), or a distributed checkpoint directory with its
    index, a whole meta.pt and every shard the index names, at least as long as the index says (a copy or
    a cleanup that lost one would fail inside Lightning's load, after the models are built)."""
    if not path.is_dir():
        return (
            None if path.is_file() and zipfile.is_zipfile(path) else "truncated, or not written by torch.save"
        )
    if not (path / _DISTRIBUTED_INDEX).is_file() or not (path / _DISTRIBUTED_REST).is_file():
        return (
            f"a directory without a distributed checkpoint's {_DISTRIBUTED_INDEX} and {_DISTRIBUTED_REST}: its "
            "save did not finish, or it is no checkpoint"
        )
    if not zipfile.is_zipfile(path / _DISTRIBUTED_REST):
        return (
            f"its {_DISTRIBUTED_REST} is truncated or not written by torch.save (the shards' index is whole)"
        )
    missing = _missing_shards(path)
    if missing:
        return f"its index names shards that are missing or shorter than it says: {', '.join(missing[:3])}"
    return None


def _missing_shards(path: Path) -> list[str]:
    """The shard files a distributed checkpoint's index names that are absent or too short (a stat each; no
    tensor is read). An index this torch cannot read is left to Lightning's load."""
    try:
        from torch.distributed.checkpoint import FileSystemReader

        storage = FileSystemReader(str(path)).read_metadata().storage_data or {}
    except Exception as error:
        log.warning("%s: its shards were not checked, the index cannot be read (%s)", path, error)
        return []
    needed: dict[str, int] = {}
    for info in storage.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    return sorted(
        name
        for name, end in needed.items()
        if not (path / name).is_file() or (path / name).stat().st_size < end
    )


def readable_checkpoint(path: str, key: str, kind: str | None = None) -> str:
    """`path` when it is a complete checkpoint (`_incomplete` says why not). With `kind` ("planner", "rm"),
    it must also be the checkpoint of that entry point's module."""
    target = Path(path)
    if not target.exists():
        raise ConfigError(f"{key}={path}: no such checkpoint")
    why = _incomplete(target)
    if why:
        raise ConfigError(f"{key}={path}: not a complete checkpoint ({why})")
    if kind is not None:
        _check_checkpoint_kind(path, key, kind)
    return path


def _weight_prefixes(path: str) -> set[str] | None:
    """The first names of the checkpoint's `state_dict` keys ("planner", "model"); None when it has no
    state_dict. A file is loaded as Lightning loads it (on cpu, torch's default `weights_only`, so that
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD applies as it does to Lightning) but memory-mapped: only the pickled
    structure is read, not the tensors' bytes. Of a distributed checkpoint only the shards' index is read."""
    import torch

    if Path(path).is_dir():
        from torch.distributed.checkpoint import FileSystemReader

        keys = FileSystemReader(path).read_metadata().state_dict_metadata
        return {key.split(".", 2)[1] for key in keys if key.startswith("state_dict.") and key.count(".") >= 2}
    checkpoint = torch.load(path, map_location="cpu", mmap=True)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    return {name.split(".", 1)[0] for name in state} if isinstance(state, dict) else None


def _check_checkpoint_kind(path: str, key: str, kind: str) -> None:
    """A ConfigError when the checkpoint's weights are not under `kind`'s prefix (Lightning would fail
    deep in the module's `on_load_checkpoint`: `KeyError: 'baseline_cache'`), or when it cannot be read (a
    corrupt pickle failed inside Lightning's load, as a bare UnicodeDecodeError naming no file). Only a whole
    pickle that torch's weights_only load refuses is left to Lightning (a warning says the kind was not
    checked): an object weights_only does not allow, which Lightning's own load decides on."""
    try:
        prefixes = _weight_prefixes(path)
    except Exception as error:
        why = f"torch.load fails: {type(error).__name__}: {_first_line(error)}"
        if isinstance(error, pickle.UnpicklingError) and not Path(path).is_dir():  # weights_only refuses it
            damage = _pickle_damage(path)
            if damage is None:
                log.warning(
                    "%s=%s: its kind was not checked, torch.load cannot read it (%s)",
                    key,
                    path,
                    _first_line(error),
                )
                return
            why = f"its pickled structure is corrupt: {damage}"
        raise ConfigError(f"{key}={path}: not a readable checkpoint ({why})") from error
    prefix, wanted = _CHECKPOINT_KINDS[kind]
    if prefixes and prefix in prefixes:
        return
    found = [what for other, what in _CHECKPOINT_KINDS.values() if prefixes and other in prefixes]
    if found:
        looks = f"it looks like {found[0]}"
    elif prefixes:
        looks = "its weights are under " + ", ".join(f"`{name}.`" for name in sorted(prefixes))
    elif prefixes is not None and not Path(path).is_dir():
        looks = "its state_dict is empty"
    else:
        looks = "it has no state_dict (not a Lightning training checkpoint)"
    raise ConfigError(f"{key}={path}: not {wanted}; {looks}")


def _pickle_damage(path: str) -> str | None:
    """Why the pickle of the checkpoint file `path` does not parse, or None when it does. torch's weights_only
    unpickler refuses an unknown opcode (a corrupt byte) as it refuses an object it does not allow: the
    opcodes are parsed here (pickletools: nothing is run) to tell the two apart."""
    import pickletools

    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rpartition("/")[2] == "data.pkl")
            for _ in pickletools.genops(archive.read(name)):
                pass
    except Exception as error:
        return f"{type(error).__name__}: {_first_line(error)}"
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def resume_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint a restarted job left in its own output dir: `checkpoints/last.ckpt`
    or Lightning's SLURM `hpc_ckpt_<n>.ckpt` (its own requeue handler saves one when the run has no
    LastCheckpoint callback: planlift.callbacks.requeue), files or distributed checkpoint directories, and
    `last.ckpt.old`: a job killed while a distributed `last.ckpt` was being replaced (planlift.atomic.commit
    keeps the previous one there for a moment) resumes from it. Newest by the step saved (its `global_step`),
    then by time: a copied run directory or a node's clock does not reorder them. An incomplete one is
    skipped with a warning when a complete one exists, else returned (the caller names it). None for a
    fresh run."""
    root = Path(output_dir)
    last = root / "checkpoints" / "last.ckpt"
    found = [*root.glob("hpc_ckpt_*.ckpt"), last, last.with_name("last.ckpt.old")]
    why_incomplete = {path: _incomplete(path) for path in found if path.exists()}
    complete = [path for path, why in why_incomplete.items() if why is None]
    if complete:
        for path, why in why_incomplete.items():
            if why is not None:
                log.warning("auto_resume skips %s: not a complete checkpoint (%s)", path, why)
    candidates = complete or list(why_incomplete)
    return str(max(candidates, key=_saved_at)) if candidates else None


def _saved_at(path: Path) -> tuple[int, float]:
    """(global step, time) of a checkpoint: the step from its file's pickled structure (memory-mapped, no
    tensor bytes read) or a distributed one's meta.pt (-1 when unreadable); the time from the file's mtime,
    or meta.pt's (written last)."""
    import torch

    rest = path / _DISTRIBUTED_REST
    source = rest if rest.is_file() else path
    try:
        step = int(torch.load(source, map_location="cpu", mmap=True).get("global_step", -1))
    except Exception:
        step = -1
    return step, source.stat().st_mtime


def local_multirun() -> bool:
    """A job of a Hydra multirun that is not a SLURM task (the basic or submitit_local launcher)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return (
        HydraConfig.initialized()
        and "SLURM_NTASKS" not in os.environ
        and HydraConfig.get().mode == RunMode.MULTIRUN
    )


def prepare_ddp_relaunch(script: str) -> None:
    """Make Lightning's DDP child processes re-run *this job* of a Hydra multirun.

    Lightning starts ranks 1..N-1 by re-running `sys.argv` plus `hydra.run.dir=<hydra.run.dir>`. In a
    multirun that argv is the whole sweep (`-m` and every value) and `hydra.run.dir` is not the job's
    directory: each child would start a sweep of its own. Here argv becomes `script` with this job's
    overrides (config dir/name flags kept) and `hydra.run.dir` the job's output dir; under
    `hydra/launcher=submitit_local` the process's `__main__` is submitit's, so it is pointed at `script`.
    No-op outside a multirun, and under SLURM, where every rank is a SLURM task and nothing is re-run.
    """
    from hydra.core.hydra_config import HydraConfig

    if not local_multirun():
        return
    hydra_cfg = HydraConfig.get()
    kept, args = [], iter(sys.argv[1:])
    for arg in args:
        if arg in ("-cd", "--config-dir", "-cn", "--config-name", "-cp", "--config-path"):
            kept += [arg, next(args, "")]
        elif arg.startswith(("--config-dir=", "--config-name=", "--config-path=")):
            kept.append(arg)
    sys.argv = [str(script), *kept, *hydra_cfg.overrides.task]
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is not None:  # python -m submitit...
        main.__spec__ = None
    OmegaConf.set_readonly(hydra_cfg, False)
    hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    OmegaConf.set_readonly(hydra_cfg, True)


@contextlib.contextmanager
def separate_job() -> Iterator[None]:
    """One job of a multirun whose jobs share this process (Hydra's basic launcher): what a distributed job
    leaves behind is undone when it ends. Lightning keeps the process group of a DDP / FSDP job and leaves
    its launcher's variables in `os.environ` (MASTER_PORT, WORLD_SIZE, LOCAL_RANK, ...): the next
    distributed job would find a group whose other ranks have exited ("Connection closed by peer") and,
    with LOCAL_RANK set, believe its ranks were started for it. `sys.argv` (which `prepare_ddp_relaunch`
    rewrites) comes back too, and the job's rendezvous port (`planlift.rendezvous`) is released. No-op
    outside a multirun and under SLURM (a process per task and job)."""
    if not local_multirun():
        yield
        return
    environ, argv = dict(os.environ), list(sys.argv)
    try:
        yield
    finally:
        import torch.distributed as dist

        from planlift import rendezvous

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        rendezvous.release_all()
        os.environ.clear()
        os.environ.update(environ)
        sys.argv = argv


def configure_threads(torch_threads: int | None) -> None:
    """Pin torch's intra-op threads (two threads on two busy cores cost 10x)."""
    import torch

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(torch_threads))


class _DropAdvertisements(logging.Filter):
    """Lightning's "Tip: try installing litlogger / litmodels" lines (not warnings: advertisements)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud" not in str(record.msg)


def quiet_libraries() -> None:
    """Library noise that says nothing about this run, filtered where it starts (one message each, by
    its text, so that every other warning still shows): weight-loading progress bars and hub warnings,
    Lightning's product tips, and the deprecation Lightning 2.6 triggers in torch's pytree module."""
    with contextlib.suppress(Exception):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvertisements) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvertisements())
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def user_error(error: BaseException) -> PlanliftError | None:
    """The PlanliftError behind `error` (Hydra wraps errors raised while instantiating)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PlanliftError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print configuration and input errors as one clear line and exit 2, without a stack trace."""
    try:
        yield
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        log.error("%s: %s", type(cause).__name__, cause)
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)


def check_devices(cfg: DictConfig) -> None:
    """Fail before any model is built (a bootstrap can take minutes) when the trainer asks for more CUDA
    devices than this process sees: `hardware=gpu` on a machine without one, `trainer.devices=8` on 4."""
    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    devices = trainer.get("devices", 1)
    if isinstance(devices, int) and devices > 0:
        wanted = devices
    elif OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        wanted = len(devices)
    else:  # "auto", -1: as many as there are, at least one
        wanted = 1
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < wanted:
        raise ConfigError(
            f"trainer.accelerator={accelerator} with trainer.devices={devices}, but this process sees "
            f"{visible} CUDA device(s) (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "without a GPU use hardware=cpu, ddp_sim or fsdp_sim"
        )


def check_value_kinds(cfg: DictConfig) -> None:
    """Every scalar of every `_target_` node against the annotations of the class it configures
    (`planlift.config_types`): `algorithm.num_generations=four` names its key before anything is built."""
    from planlift.config_types import check_targets

    check_targets(cfg, [key for key in cfg if key != "hydra"])


def check_seed(seed: object) -> int:
    """`seed` (the top-level key every component's seed interpolates) as the int it must be: a string
    or null would be a bare ValueError in `seed_everything`, a fraction a seed silently rounded. A whole
    number written as a float (`seed=1e3`) is that integer, as in the components."""
    from planlift.config_types import check_value

    seed = check_value("seed", seed, int)
    if not 0 <= seed < 2**32:  # numpy's range, which seed_everything enforces
        raise ConfigError(f"seed must be in 0..{2**32 - 1}, got {seed}")
    return seed


def check_learning_rate(cfg: DictConfig, key: str) -> None:
    """The optimizer's learning rate at `key` (e.g. algorithm.optimizer.lr) must be a number > 0: torch
    rejects a negative one only when the optimizer is built (after the models load), and accepts 0 (a run
    that trains nothing). Absent or null: the optimizer's own default."""
    lr = OmegaConf.select(cfg, key, default=None)
    if lr is None:
        return
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise ConfigError(f"{key} must be a number, got {lr!r}")
    if not lr > 0:  # NaN too
        raise ConfigError(f"{key} must be > 0, got {lr}")


def build_trainer(cfg: DictConfig, resume_from: str | None = None):
    """The Lightning Trainer of `cfg.trainer`, with every configured logger and callback (null ones skipped),
    and a check that every rank of a distributed fit resumes from `resume_from` (the checkpoint this rank
    chose: `checkpoint_to_resume`)."""
    import hydra

    from planlift.callbacks.checkpoint import SameResumeCheckpoint

    def each(nodes: DictConfig | None) -> list:
        return [hydra.utils.instantiate(node) for node in (nodes or {}).values() if node is not None]

    check_validation_schedule(cfg.trainer)

    callbacks = [*each(cfg.get("callbacks")), SameResumeCheckpoint(resume_from)]
    return hydra.utils.instantiate(cfg.trainer, logger=each(cfg.get("logger")), callbacks=callbacks)


def check_validation_schedule(trainer: DictConfig) -> None:
    """`trainer.val_check_interval`: an error when it is 0 or negative (Lightning divides by it mid-run), a
    warning when the run ends before its first validation (no val/* and no final metrics) or after its last
    (Lightning adds no validation at max_steps: the final metrics would be an earlier step's)."""
    interval, max_steps = trainer.get("val_check_interval"), trainer.get("max_steps", -1)
    if interval is None or isinstance(interval, bool):
        return
    if interval <= 0:
        raise ConfigError(f"trainer.val_check_interval must be > 0, got {interval}")
    if isinstance(interval, int) and max_steps is not None and 0 < max_steps < interval:
        log.warning(
            "trainer.val_check_interval=%d is beyond trainer.max_steps=%d: the run will not validate "
            "(no val/* curves, no final metrics)",
            interval,
            max_steps,
        )
    elif (
        isinstance(interval, int) and max_steps is not None and max_steps > interval and max_steps % interval
    ):
        log.warning(
            "trainer.max_steps=%d is not a multiple of trainer.val_check_interval=%d: the last validation runs "
            "after step %d, so the final metrics (final/*, the summary, what a sweeper gets) are that step's, "
            "not the trained planner's",
            max_steps,
            interval,
            max_steps - max_steps % interval,
        )


def leave_this_second() -> None:
    """Sleep until the clock's second changes (at most 1 s). Called between the step-0 validation and the
    fit, whose TensorBoard writers write two event files of one run: TensorBoard reads a run's files in name
    order, and a name holds the creation second, then a per-process counter that is not zero-padded, so two
    files of one second can sort as ".10" before ".9". Read out of step order, TensorBoard drops the later
    steps as orphaned data (a sweep's fourth run served only its step-0 `val/e2e_acc`)."""
    now = time.time()
    time.sleep(math.floor(now) + 1 - now)


def metric_value(metrics: dict, name: str) -> float | None:
    """`metrics[name]` as a float (what an entry point returns to a sweeper), None when it was not logged."""
    value = metrics.get(name)
    return None if value is None else float(value)
