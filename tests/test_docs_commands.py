"""Every launch command the project writes down composes: the README, docs/, the configs' and entry points'
`Launch:` comments, and the scripts that take train.py overrides. A command whose key was renamed, or that
sets a key no config declares, fails here instead of in a reader's terminal.

Commands are read from the text: `python src/<entry>.py` (or a listed script) up to the end of the command
(a backtick, a table bar, a `#` comment, prose); `<placeholders>` become a value, a multirun's sweep
(`seed=0,1,2`) its first value, and `-cd/-cn` select the sweep file it runs."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from planlift import config_types
from tests.test_configs import CONF, compose_with

ROOT = CONF.parent
ENTRY_POINTS = {
    **{
        f"src/{name}.py": name
        for name in ("train", "evaluate", "train_rm", "eval_rm", "serve_rm", "build_groups")
    },
    "scripts/executor_dependence.py": "train",
}
SCRIPT_KEYS = {"scripts/executor_dependence.py": ("problems", "reasonings", "executor_samples")}
COMMAND = re.compile(r"python (" + "|".join(re.escape(path) for path in ENTRY_POINTS) + r")(.*)")
# where a command's text ends: code quotes, table cells, comments, arrows, prose in parentheses, the next
# command, a label such as "Evaluate:", a shell separator, a comma before a word (prose; a sweep has no spaces)
END = re.compile(r"[`|;]|\s#|\s->|\s\(|python |\s[A-Z][a-z]+:|&&|,\s(?=[a-z]+\s)")


def documents() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted(CONF.rglob("*.yaml")),
        *sorted((ROOT / "sweeps").glob("*.yaml")),
        *sorted((ROOT / "src").glob("*.py")),
        *(ROOT / path for path in ENTRY_POINTS if path.startswith("scripts/")),
    ]


def written_commands() -> Iterator[tuple[str, str, str]]:
    """(file:line, entry point, the command's arguments), continuation lines joined."""
    for path in documents():
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            for match in COMMAND.finditer(line):
                text, following = match.group(2), number + 1
                while text.rstrip().endswith("\\") and following < len(lines):
                    text = text.rstrip()[:-1] + " " + lines[following].strip().lstrip("#").strip()
                    following += 1
                yield f"{path.relative_to(ROOT)}:{number + 1}", match.group(1), END.split(text)[0]


def first_of_sweep(value: str) -> str:
    """`a=1,2,3` -> `a=1`; commas inside brackets (a list value) stay."""
    depth = 0
    for index, char in enumerate(value):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            return value[:index]
    return value


def parse(entry: str, text: str) -> tuple[Path, str, list[str]]:
    """(config dir, config name, overrides) of one written command."""
    config_dir, config_name, overrides = CONF, ENTRY_POINTS[entry], []
    tokens = iter(shlex.split(re.sub(r"<[^>]*>", "x", text)))
    for token in tokens:
        if token == "-m":
            continue
        if token in ("-cd", "-cn"):
            value = next(tokens)
            config_dir, config_name = (ROOT / value, config_name) if token == "-cd" else (config_dir, value)
            continue
        if token == "..." or token.startswith("[") or token.endswith("=..."):
            continue  # "[options]", "rm_path=..."
        if "=" not in token and not token.startswith(("~", "+")):
            break  # prose after the command
        if token.split("=", 1)[0] in SCRIPT_KEYS.get(entry, ()):
            continue
        overrides.append(first_of_sweep(token))
    return config_dir, config_name, overrides


COMMANDS = list(written_commands())
# one compose per distinct command (many are written in several places): where, first found
DISTINCT: dict[tuple[Path, str, tuple[str, ...]], str] = {}
for _where, _entry, _text in COMMANDS:
    _dir, _name, _overrides = parse(_entry, _text)
    DISTINCT.setdefault((_dir, _name, tuple(_overrides)), _where)


def test_the_commands_are_found():
    """The reader finds the README's launch lines and every entry point's (a broken pattern finds none)."""
    assert len(COMMANDS) >= 150
    assert {entry for _, entry, _ in COMMANDS} == set(ENTRY_POINTS)
    assert any(where.startswith("README.md") and "debug=fast" in text for where, _, text in COMMANDS)


@pytest.mark.parametrize(("command", "where"), DISTINCT.items(), ids=list(DISTINCT.values()))
def test_every_written_command_composes_and_binds(command, where, tmp_path):
    config_dir, config_name, overrides = command
    cfg = compose_with(list(overrides), tmp_path, config_dir=config_dir, config_name=config_name)
    config_types.check_targets(cfg, [key for key in cfg if key != "hydra"])


def test_a_command_with_an_unknown_key_fails():
    """The check has teeth: a key no config declares, or a misspelled option, is an error."""
    _, _, overrides = parse("src/train.py", "bootstrap.shared_bass=true  # a typo")
    assert overrides == ["bootstrap.shared_bass=true"]
    with pytest.raises(Exception, match="shared_bass"):
        compose_with(overrides, Path("/tmp"), config_name="train")
    assert parse("src/train.py", "-m -cd sweeps -cn length_collapse seed=0,1 'arms=[a,b]' then more")[1:] == (
        "length_collapse",
        ["seed=0", "arms=[a,b]"],
    )
