"""The closing summary of a training run (planlift.summary)."""

from planlift.summary import RunSummary


def test_summary_table_changes_phases_and_outputs():
    summary = RunSummary()
    with summary.phase("training"):
        pass
    summary.before = RunSummary.validation_metrics(
        {"val/e2e_acc": 0.155, "train/loss": 1.0, "val/leakage": 0.0}
    )
    summary.after = {"val/e2e_acc": 0.315, "val/leakage": 1.0, "val/trace/step_acc": 0.0}
    text = summary.render("outputs/runs/x", "outputs/runs/x/tensorboard")
    lines = text.splitlines()
    assert "train/loss" not in text  # only validation metrics
    row = next(line for line in lines if line.strip().startswith("val/e2e_acc"))
    assert row.split()[1:] == ["0.155", "0.315", "+0.160"]
    step_acc = next(line for line in lines if line.strip().startswith("val/trace/step_acc"))
    assert step_acc.split()[1:] == ["-", "0.000"]  # no step-0 value: no change column
    order = [line.split()[0] for line in lines if line.strip().startswith("val/")]
    assert order == ["val/e2e_acc", "val/trace/step_acc", "val/leakage"]  # the HEADLINE order
    assert "wall time: training 0s" in text
    assert "tensorboard --logdir outputs/runs/x/tensorboard" in text
