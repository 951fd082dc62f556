"""The code-structure measures of the package: import circles, the longest functions, lines per package,
and how many planlift modules one import pulls in.

    python scripts/structure_report.py [--import planlift.rewards.grounded] [--longest 10]

Import circles are found on the static graph of module-level and function-level `import` statements
(`from . import x` included), so a lazy import inside a function counts: a circle through one is still a
circle a reader has to hold in mind. Imports under `if TYPE_CHECKING:` (annotations only) do not count.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """planlift modules that `path` imports (resolving `from pkg import submodule`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_only = {
        id(inner)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for inner in ast.walk(block)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (PACKAGE_ROOT / "planlift").rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, name, known) for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found, key=len, reverse=True)


def longest_functions(count: int) -> list[tuple[int, str]]:
    rows = []
    for path in (PACKAGE_ROOT / "planlift").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                rows.append((length, f"{path.relative_to(PACKAGE_ROOT)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)[:count]


def lines_per_package() -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for path in (PACKAGE_ROOT / "planlift").rglob("*.py"):
        relative = path.relative_to(PACKAGE_ROOT / "planlift")
        key = "/".join(relative.parts[:-1]) or "(top level)"
        totals[key] += len(path.read_text().splitlines())
    return dict(sorted(totals.items()))


def modules_loaded_by(module: str) -> list[str]:
    code = (
        f"import sys; import {module}; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('planlift'))))"
    )
    env_path = str(PACKAGE_ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    ).stdout
    return out.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--import", dest="modules", action="append", default=None)
    parser.add_argument("--longest", type=int, default=10)
    args = parser.parse_args()

    found = circles(import_graph())
    print(f"import circles: {len(found)}")
    for component in found:
        print(f"  {len(component)} modules: {', '.join(component)}")
    print("\nlongest functions (lines):")
    for length, where in longest_functions(args.longest):
        print(f"  {length:4d}  {where}")
    print("\nlines per package:")
    for package, lines in lines_per_package().items():
        print(f"  {lines:5d}  {package}")
    for module in args.modules or ["planlift.rewards.grounded"]:
        loaded = modules_loaded_by(module)
        heavy = [m for m in loaded if m.startswith(("planlift.executors.vllm", "planlift.sandbox"))]
        print(
            f"\n`import {module}` loads {len(loaded)} planlift modules; vLLM executor / sandbox: {heavy or 'none'}"
        )


if __name__ == "__main__":
    main()
