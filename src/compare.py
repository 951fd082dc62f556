"""Compare the arms of a finished sweep: Markdown tables (mean and 95% CI over seeds) and PNG plots.

    python src/compare.py outputs/multirun/reward_ablation/<time>
    python src/compare.py outputs/multirun/length_collapse/<time> --curves val/e2e_acc val/uplift

Writes comparison.md, comparison.json (every scalar it used) and the plots to <sweep dir>/compare/.
"""

from __future__ import annotations

import argparse
import sys

from planlift import runtime
from planlift.compare import CURVE_TAGS, compare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compare the arms of a sweep from its TensorBoard events.")
    parser.add_argument("sweep_dir", help="a multirun directory (holding tensorboard/<run>/)")
    parser.add_argument("--out", default=None, help="output directory (default: <sweep_dir>/compare)")
    parser.add_argument("--curves", nargs="*", default=list(CURVE_TAGS), help="validation curves to plot")
    args = parser.parse_args(argv)
    with runtime.user_errors():
        result = compare(args.sweep_dir, args.out, curve_tags=args.curves)
    print(result.markdown)
    print("\nwrote " + ", ".join(str(path) for path in result.files), file=sys.stderr)


if __name__ == "__main__":
    main()
