"""src/compare.py on event files written with TensorBoard's own writer (known numbers, exact statistics)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from planlift.compare import compare, load_runs, mean_ci, metric_rows, parse_run_name
from planlift.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
T_975_DF2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom


def write_run(root: Path, name: str, final: float, curve: list[float]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(root / "tensorboard" / name))
    for step, value in enumerate(curve):
        writer.add_scalar("val/e2e_acc", value, step * 10)
    writer.add_scalar("final/val/e2e_acc", final, 0)
    writer.close()


@pytest.fixture
def reward_sweep(tmp_path):
    finals = {"exec_only": [0.25, 0.5, 0.75], "grounded": [0.5, 0.625, 0.75]}
    for reward, values in finals.items():
        for seed, value in enumerate(values):
            write_run(tmp_path, f"reward={reward},seed={seed}", value, [0.1 * seed, value])
    return tmp_path, finals


def test_parse_run_name():
    assert parse_run_name("reward=grounded,seed=1,task.length=15") == {
        "reward": "grounded",
        "seed": "1",
        "task.length": "15",
    }


def test_mean_and_student_t_interval():
    mean, half = mean_ci([0.25, 0.5, 0.75])
    assert mean == pytest.approx(0.5)
    assert half == pytest.approx(T_975_DF2 * 0.25 / math.sqrt(3))
    assert math.isnan(mean_ci([0.3])[1])


def test_rows_pool_seeds_per_arm(reward_sweep):
    root, finals = reward_sweep
    runs = load_runs(root)
    assert len(runs) == 6 and runs[0].scalars["val/e2e_acc"] == [(0, 0.0), (10, 0.25)]
    rows = metric_rows(runs, "final/val/e2e_acc")
    assert [(r.arm, sorted(r.seeds)) for r in rows] == [
        ("reward=exec_only", ["0", "1", "2"]),
        ("reward=grounded", ["0", "1", "2"]),
    ]
    for row, values in zip(rows, finals.values(), strict=True):
        assert row.stats == pytest.approx(mean_ci(values))


def test_cli_writes_tables_json_and_curves(reward_sweep):
    root, _ = reward_sweep
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "compare.py"), str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    half = T_975_DF2 * 0.125 / math.sqrt(3)
    assert (
        f"| reward=grounded | 3 | 0.6250 | ± {half:.4f} [{0.625 - half:.4f}, {0.625 + half:.4f}] |"
        in result.stdout
    )
    out = root / "compare"
    assert (out / "comparison.md").read_text().strip() == result.stdout.strip()
    png = (out / "curves_val_e2e_acc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "length_collapse.png").exists()


def test_length_sweep_gets_a_length_column_and_curve(tmp_path):
    for length in (5, 15):
        for reward in ("exec_only", "grounded"):
            for seed in (0, 1):
                write_run(
                    tmp_path,
                    f"reward={reward},seed={seed},task.length={length}",
                    1 / length + seed / 10,
                    [0.05, 0.5],
                )
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tensorboard" / "reward=grounded,seed=2,task.length=15"))
    writer.add_scalar("val/e2e_acc", 0.9, 0)  # crashed after its step-0 validation: in no before value
    writer.close()
    result = compare(tmp_path)
    assert "| arm | length | n | mean | 95% CI |" in result.markdown
    assert "| reward=grounded | 15 | 2 |" in result.markdown
    # before -> after per length and arm: the step-0 mean, the final mean ± CI over seeds 0 and 1, and
    # (in brackets) the mean ± CI of each seed's change
    assert "| N | arm | seeds | e2e_acc |" in result.markdown
    after = [1 / 15, 1 / 15 + 0.1]
    half = mean_ci(after)[1]
    change, change_half = mean_ci([a - 0.05 for a in after])
    cell = f"0.050 -> {sum(after) / 2:.3f} ± {half:.3f} ({change:+.3f} ± {change_half:.3f})"
    assert f"| 15 | reward=grounded | 2 | {cell} |" in result.markdown
    assert (tmp_path / "compare" / "length_collapse.png").is_file()


def test_a_directory_without_events_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no TensorBoard event files"):
        compare(tmp_path)


def test_headline_table_and_paired_difference_notes(reward_sweep, tmp_path):
    from planlift.compare import difference_notes, headline_table

    root, finals = reward_sweep
    runs = load_runs(root)
    table = headline_table(runs)
    mean, half = mean_ci(finals["grounded"])
    assert f"| reward=grounded | 3 | {mean:.3f} ± {half:.3f} |" in table
    change = [g - e for g, e in zip(finals["grounded"], finals["exec_only"], strict=True)]  # 0.25, 0.125, 0
    mean, half = mean_ci(change)
    assert difference_notes(runs) == [
        f"- val/e2e_acc: reward=grounded - reward=exec_only: {mean:+.4f} ± {half:.4f} over 3 paired seeds, "
        "not separated"
    ]
    separated = tmp_path / "separated"
    for reward, values in {"exec_only": [0.1, 0.11, 0.12], "grounded": [0.5, 0.51, 0.52]}.items():
        for seed, value in enumerate(values):
            write_run(separated, f"reward={reward},seed={seed}", value, [value])
    (note,) = difference_notes(load_runs(separated))
    assert note.startswith("- val/e2e_acc: reward=grounded - reward=exec_only: +0.4000 ± 0.0000 over 3")
    assert note.endswith(", separated")


def test_arms_that_share_seeds_are_compared_seed_by_seed(tmp_path):
    """Every seed gains 0.04-0.06 while the seeds spread 0.3-0.7: the arms' own intervals overlap, the
    interval of the per-seed differences excludes 0. A seed only one arm holds is not paired."""
    from planlift.compare import difference_notes, metric_rows

    values = {"exec_only": [0.30, 0.50, 0.70, 0.9], "grounded": [0.35, 0.55, 0.76]}
    for reward, finals in values.items():
        for seed, value in enumerate(finals):
            write_run(tmp_path, f"reward={reward},seed={seed}", value, [value])
    runs = load_runs(tmp_path)
    exec_only, grounded = metric_rows(runs, "final/val/e2e_acc")
    (m1, h1), (m2, h2) = exec_only.stats, grounded.stats
    assert m1 - h1 <= m2 + h2 and m2 - h2 <= m1 + h1  # unpaired: overlapping intervals
    mean, half = mean_ci([0.05, 0.05, 0.06])
    assert half < mean
    assert difference_notes(runs) == [
        f"- val/e2e_acc: reward=grounded - reward=exec_only: {mean:+.4f} ± {half:.4f} over 3 paired seeds, "
        "separated"
    ]


def test_an_arm_with_a_nan_or_one_seed_is_named_not_called_separated(tmp_path):
    """NaN compares as neither overlapping nor separated: an arm with one (a validation whose every group
    lost a sample) is named and left out, as is an arm with a single seed; a table cell says which."""
    from planlift.compare import difference_notes

    values = {"a": [0.5, 0.52, math.nan], "b": [0.49, 0.5, 0.51], "c": [0.1, 0.11, 0.12], "d": [0.3]}
    for arm, finals in values.items():
        for seed, value in enumerate(finals):
            write_run(tmp_path, f"arm={arm},seed={seed}", value, [value])
    notes = difference_notes(load_runs(tmp_path))
    assert notes[:2] == [
        "- val/e2e_acc: NaN for arm=a at seed 2; left out of the comparison",
        "- val/e2e_acc: one seed only, not compared: arm=d",
    ]
    (pair,) = notes[2:]  # b and c
    assert pair.startswith("- val/e2e_acc: arm=c - arm=b: -0.3900 ± 0.0000 over 3 paired seeds")
    assert pair.endswith(", separated")
    markdown = compare(tmp_path).markdown
    assert "| arm=a | 3 | nan | n/a (NaN in a seed) |" in markdown
    assert "| arm=d | 1 | 0.3000 | n/a (1 seed) |" in markdown


def test_curves_average_the_finished_seeds_at_the_steps_they_all_logged(tmp_path):
    """Two of three seeds crash after step 20 and the third climbs to 0.9: pooled, the curve jumped when
    the seeds dropped out. Now it is the mean of the finished runs, and the crashed ones are named."""
    from torch.utils.tensorboard import SummaryWriter

    from planlift.compare import curve_points

    write_run(tmp_path, "reward=a,seed=0", 0.9, [0.1, 0.2, 0.3, 0.9])  # steps 0, 10, 20, 30
    write_run(tmp_path, "reward=a,seed=1", 0.5, [0.1, 0.2, 0.5])  # finished at step 20
    for seed in (2, 3):
        writer = SummaryWriter(str(tmp_path / "tensorboard" / f"reward=a,seed={seed}"))
        for step, value in enumerate([0.2, 0.25, 0.3]):
            writer.add_scalar("val/e2e_acc", value, step * 10)
        writer.close()  # no final/*: crashed
    ((label, (steps, values)),) = curve_points(load_runs(tmp_path), "val/e2e_acc").items()
    assert label == "reward=a" and steps == [0, 10, 20]  # step 30: seed 0 alone
    assert values == [pytest.approx(v, abs=1e-6) for v in ([0.1, 0.1], [0.2, 0.2], [0.3, 0.5])]
    markdown = compare(tmp_path).markdown
    assert "drawn alone in the curves, in no mean:** reward=a,seed=2, reward=a,seed=3" in markdown


def test_before_is_the_validation_at_step_0_only(tmp_path):
    """A run without the validation before training (validate_before_training=false) has no before/ value:
    its first validation is a trained one."""
    from planlift.compare import with_before

    write_run(tmp_path, "seed=0", 0.4, [0.1, 0.4])  # steps 0 and 10
    late = tmp_path / "late"
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(late / "tensorboard" / "seed=0"))
    writer.add_scalar("val/e2e_acc", 0.4, 60)
    writer.close()
    (with_step_0,) = with_before(load_runs(tmp_path))
    (without,) = with_before(load_runs(late))
    assert with_step_0.scalars["before/val/e2e_acc"] == [(0, pytest.approx(0.1))]
    assert "before/val/e2e_acc" not in without.scalars


def test_what_the_comparison_leaves_out_is_said(reward_sweep, caplog):
    """A run whose event file is corrupt, a run that never logged final/* (a crashed seed) and a curve no run
    logged are named in comparison.md and in a warning, not dropped silently."""
    from torch.utils.tensorboard import SummaryWriter

    root, _ = reward_sweep
    corrupt = root / "tensorboard" / "reward=grounded,seed=7"
    corrupt.mkdir()
    (corrupt / "events.out.tfevents.1.host").write_bytes(b"\x00garbage" * 8)
    writer = SummaryWriter(str(root / "tensorboard" / "reward=grounded,seed=8"))
    writer.add_scalar("val/e2e_acc", 0.3, 0)  # crashed before its final metrics
    writer.close()
    with caplog.at_level("WARNING", logger="planlift.compare"):
        result = compare(root, curve_tags=["val/e2e_acc", "val/nonexistent"])
    assert (
        "1 runs whose event files held no scalar (corrupt or empty): not in any table:** "
        "reward=grounded,seed=7" in result.markdown
    )
    assert (
        "1 runs without final/* metrics (unfinished or failed): drawn alone in the curves, in no mean:** "
        "reward=grounded,seed=8" in result.markdown
    )
    assert "1 curves asked for that no run logged:** val/nonexistent" in result.markdown
    assert caplog.text.count("WARNING") == 3
    assert "Left out" not in compare(root / "tensorboard" / "reward=exec_only,seed=0").markdown


def test_event_files_without_a_readable_scalar_are_a_clear_error(tmp_path):
    run = tmp_path / "tensorboard" / "only"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.1.host").write_bytes(b"\x00garbage" * 8)
    with pytest.raises(DataError, match="hold no scalar that could be read"):
        compare(tmp_path)


def test_two_jobs_in_one_run_directory_are_said(tmp_path):
    """Jobs whose overrides differ only in keys the run name leaves out (trainer.max_steps) log into one
    directory: the comparison names it instead of merging them quietly."""
    write_run(tmp_path, "reward=a,seed=0", 0.35, [0.1, 0.35])
    write_run(tmp_path, "reward=a,seed=0", 0.6, [0.1, 0.35, 0.6])  # the longer job, written later
    markdown = compare(tmp_path).markdown
    assert (
        "runs that logged final/* more than once" in markdown
        and "the last write is used:** reward=a" in markdown
    )
    assert "| reward=a | 1 | 0.6000 |" in markdown


def test_step_0_lines_one_when_the_arms_start_alike_else_one_per_arm():
    from planlift.compare import Row, start_lines

    alike = [
        Row(arm, length, ["0"], [0.2 if length == "5" else 0.1]) for arm in "ab" for length in ["5", "10"]
    ]
    assert start_lines(alike) == {"before training (step 0)": {5.0: 0.2, 10.0: 0.1}}
    apart = [Row("a", "5", ["0"], [0.2]), Row("b", "5", ["0"], [0.6])]  # another executor, say
    assert start_lines(apart) == {"a (step 0)": {5.0: 0.2}, "b (step 0)": {5.0: 0.6}}


def test_a_cell_over_fewer_seeds_than_its_row_says_so(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for seed in (0, 1, 2):
        writer = SummaryWriter(str(tmp_path / "tensorboard" / f"reward=a,seed={seed}"))
        writer.add_scalar("final/val/e2e_acc", 0.5, 0)
        if seed == 0:
            writer.add_scalar("final/val/pass@4", 0.9, 0)  # one seed validated with samples
        writer.close()
    assert "| reward=a | 3 | 0.500 ± 0.000 | 0.900 (n=1) |" in compare(tmp_path).markdown
