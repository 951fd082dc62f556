"""A checkpoint that is a whole zip but whose pickled structure is corrupt is a ConfigError naming it and the
error, before any model is built (planlift.runtime.checkpoint_to_resume); it used to pass with a warning and
fail inside Lightning's load with a bare UnicodeDecodeError."""

from __future__ import annotations

import logging
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from planlift import runtime
from planlift.errors import ConfigError


def lightning_checkpoint(path: Path, **extra) -> Path:
    """A planner-training checkpoint as Lightning saves one (weights under `planner.`)."""
    checkpoint = {
        "epoch": 0,
        "global_step": 4,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": {"planner.lm_head.weight": torch.zeros(2)},
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "planlift": {},
        **extra,
    }
    torch.save(checkpoint, path)
    return path


def overwrite_in_pickle(path: Path, offset_in_pickle, new: bytes) -> None:
    """Bytes of the zip's data.pkl replaced in place: the zip stays readable (torch checks no CRC)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        structure = archive.read(name)
    raw = bytearray(path.read_bytes())
    at = raw.index(structure) + offset_in_pickle(structure)
    raw[at : at + len(new)] = new
    path.write_bytes(bytes(raw))
    assert zipfile.is_zipfile(path) and name in zipfile.ZipFile(path).namelist()


def resume(tmp_path: Path, **cfg) -> str | None:
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, **cfg})
    return runtime.checkpoint_to_resume(cfg, kind="planner")


def test_a_corrupt_string_in_the_pickle_names_the_file(tmp_path):
    bad = lightning_checkpoint(tmp_path / "bad.ckpt")
    assert resume(tmp_path, ckpt_path=str(bad)) == str(bad)
    overwrite_in_pickle(bad, lambda structure: structure.index(b"global_step"), b"\xff\xfe")  # not UTF-8
    with pytest.raises(ConfigError, match=rf"ckpt_path={bad}: .*UnicodeDecodeError: 'utf-8' codec can't"):
        resume(tmp_path, ckpt_path=str(bad))
    (tmp_path / "checkpoints").mkdir()
    bad.rename(tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match=r"auto_resume found=.*last.ckpt: .*UnicodeDecodeError"):
        resume(tmp_path, auto_resume=True)


def test_a_corrupt_opcode_is_no_weights_only_refusal(tmp_path, caplog):
    """torch's weights_only load refuses an unknown opcode as it refuses a numpy scalar; only the latter, a
    whole pickle, is left to Lightning's full load."""
    bad = lightning_checkpoint(tmp_path / "bad.ckpt")

    def third_opcode(structure: bytes) -> int:
        return list(pickletools.genops(structure))[3][2]

    overwrite_in_pickle(bad, third_opcode, b"\xee")
    # the zip's CRC of data.pkl no longer matches (a changed byte), or, where it does, the opcode is unknown
    damage = r"(BadZipFile: Bad CRC-32|ValueError: .*opcode .* unknown)"
    with pytest.raises(ConfigError, match=rf"ckpt_path={bad}: .*corrupt: {damage}"):
        resume(tmp_path, ckpt_path=str(bad))
    refused = lightning_checkpoint(tmp_path / "numpy.ckpt", callbacks={"Mine": np.float64(0.5)})
    with caplog.at_level(logging.WARNING, logger="planlift"):
        assert resume(tmp_path, ckpt_path=str(refused)) == str(refused)
    assert f"ckpt_path={refused}: its kind was not checked" in caplog.text
