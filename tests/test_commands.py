"""Every command is documented: its --help says what it does, and the README names it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("path", _commands(cli), ids=" ".join)
def test_every_command_has_help_and_a_place_in_the_readme(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0 and "Usage: " in result.output
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help and len(command.help.split()) >= 3, f"kg-etl {' '.join(path)} has no real help text"
    assert f"kg-etl {path[0]}" in README, f"the README never shows `kg-etl {path[0]}`"
    if not isinstance(command, click.Group):
        assert "Example" in command.help and f"kg-etl {path[0]}" in command.help, "show an example in --help"


def test_help_names_the_defaults_a_user_must_otherwise_guess() -> None:
    from kg_etl.cli.system import BENCH_PRESETS
    from kg_etl.defaults import DEFAULT_CATEGORIES
    from kg_etl.testing import PRESETS

    ingest = CliRunner().invoke(cli, ["ingest", "--help"], terminal_width=200).output
    assert all(label in ingest for label in DEFAULT_CATEGORIES)
    bench = CliRunner().invoke(cli, ["bench", "--help"], terminal_width=200).output
    assert set(BENCH_PRESETS) == set(PRESETS) and all(name in bench for name in BENCH_PRESETS)


def test_the_command_line_loads_no_library_it_does_not_need_for_help() -> None:
    import subprocess
    import sys

    code = "import sys, kg_etl.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    heavy = {"langchain_core", "neo4j", "llama_cpp", "numpy", "pydantic", "rich", "pypdf", "ray"}
    assert not heavy & loaded, f"imported just for --help: {sorted(heavy & loaded)}"
