"""The RM evaluation results as a rich table (src/eval_rm.py prints it)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def results_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"reasoning RM: {results['rm_path']}")
    table.add_column("set")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(results.get("dev", {}).items()):
        table.add_row("dev groups", name, f"{value:.3f}" if isinstance(value, float) else str(value))
    for set_name, numbers in results.get("heldout", {}).items():
        table.add_row(set_name, "AUROC", f"{numbers['auroc']:.3f}")
        if "first_error_f1" in numbers:
            table.add_row(
                set_name,
                "first-error F1 (error / correct acc)",
                f"{numbers['first_error_f1']:.3f} ({numbers['first_error_error_acc']:.3f} / "
                f"{numbers['first_error_correct_acc']:.3f})",
            )
        cut = numbers.get("cut_problem", 0) + numbers.get("cut_reasoning", 0)
        if cut:
            whole = numbers.get("auroc_whole")
            table.add_row(set_name, "AUROC of the uncut inputs", "n/a" if whole is None else f"{whole:.3f}")
            table.add_row(
                set_name,
                "inputs cut (problem tail / reasoning head)",
                f"{numbers['cut_problem']} / {numbers['cut_reasoning']}",
            )
        table.add_row(set_name, "items (correct / flawed)", f"{numbers['correct']} / {numbers['flawed']}")
        table.add_row(
            set_name,
            "mean score (correct / flawed)",
            f"{numbers['mean_score_correct']:.3f} / {numbers['mean_score_flawed']:.3f}",
        )
    return table
