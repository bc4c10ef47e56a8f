"""``kg-etl init`` (a commented starter kg-etl.toml) and ``kg-etl config show`` (what is in effect, and why)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from kg_etl import defaults as d
from kg_etl.cli.app import GRAPH_PARAMS, add_row, cli, out, say, table
from kg_etl.errors import ConfigError

__all__ = ["config", "init", "starter"]

_SECRET_PARAMS = {"neo4j_password", "pdf_password", "llm_api_key"}
_SOURCES = {
    click.core.ParameterSource.ENVIRONMENT: "environment",
    click.core.ParameterSource.DEFAULT_MAP: "config file",
    click.core.ParameterSource.DEFAULT: "default",
}


@cli.command()
@click.argument("path", required=False, default=d.CONFIG_FILE, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
def init(path: Path, force: bool) -> None:
    """Write a commented starter config file (./kg-etl.toml by default): every ingest option at its default.

    Uncomment and change what you need; the command line and environment variables still win over it.

    \b
    Example:
      kg-etl init && $EDITOR kg-etl.toml
    """
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to replace it")
    ingest = cli.commands["ingest"]
    path.write_text(starter(ingest), encoding="utf-8")
    say(f"wrote {path}; `kg-etl config show` shows what is in effect")


def starter(ingest: click.Command) -> str:
    """A kg-etl.toml with every ingest option commented out at its default, valid TOML once uncommented."""
    lines = [
        "# kg-etl settings. Precedence: command-line option > environment variable > this file > default.",
        "# `kg-etl config show` prints what is in effect and where each value comes from.",
        "",
        "[graph]",
        "# Without a uri, kg-etl starts its local graph server.",
        '# uri = "bolt://localhost:7687"',
        '# username = "neo4j"',
        '# password = "choose-one"',
        '# database = "neo4j"',
        "",
        "[ingest]",
    ]
    for param in ingest.params:
        if not isinstance(param, click.Option) or param.name in _SECRET_PARAMS | set(GRAPH_PARAMS.values()):
            continue
        key = next(o[2:] for o in param.opts if o.startswith("--")).replace("-", "_")
        lines.append(f"# {(param.help or '').split('[env')[0].strip()}")
        value = _toml(param)
        lines.append(f"# {key} = {value}" if value is not None else f"#   ({key}: unset unless you set it)")
    lines += [
        "",
        "[passwords]",
        '# Passwords of encrypted PDFs, by file name or glob: "reports/*.pdf" = "secret"',
        "",
    ]
    return "\n".join(lines)


def _toml(param: click.Option) -> str | None:
    if param.name == "model_for":
        return '{ validate = "lfm2-700m-q4_k_m" }'
    if param.name == "categories":
        return json.dumps(list(d.DEFAULT_CATEGORIES))
    default = _plain(param.default)
    if param.is_flag and default is None:
        default = False
    return None if default is None else json.dumps(default)


@cli.group()
def config() -> None:
    """The settings in effect: from options' defaults, the environment and the config file."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print every ingest option's value and where it comes from (passwords masked).

    \b
    Example:
      KG_ETL_PARALLEL=4 kg-etl config show
    """
    root = ctx.find_root()
    command = cli.commands["ingest"]
    sub = click.Context(command, parent=root, info_name="ingest")
    effective = (_effective(sub, param) for param in command.params if isinstance(param, click.Option))
    rows = [row for row in effective if row is not None]
    passwords = {name: "***" for name in root.obj["passwords"]}
    if as_json:
        click.echo(json.dumps({"config": str(root.obj["config"] or ""), "options": rows, "passwords": passwords}))
        return
    say(f"config file: {root.obj['config'] or 'none (kg-etl init writes one)'}")
    grid = table("option", "value", "from")
    for row in rows:
        add_row(grid, row["option"], str(row["value"]), row["source"])
    out().print(grid)
    if passwords:
        say(f"PDF passwords for: {', '.join(passwords)}")


def _effective(ctx: click.Context, param: click.Option) -> dict[str, Any] | None:
    if param.name in ("quiet", "report_path") or param.hidden:
        return None
    value, source = param.consume_value(ctx, {})
    value = _plain(value)
    label = _SOURCES.get(source, "default") if source is not None else "default"
    if label == "environment" and param.envvar:
        label = f"environment {next(e for e in _envvars(param) if e in os.environ)}"
    if param.name in _SECRET_PARAMS and value:
        value = "***"
    return {"option": param.opts[0], "value": value, "source": label}


def _plain(value: Any) -> Any:
    """A value as settings hold it: click 8.3 marks "no default" with a sentinel object, which is None here."""
    return value if value is None or isinstance(value, str | int | float | bool | list | tuple) else None


def _envvars(param: click.Option) -> list[str]:
    envvar = param.envvar
    return [envvar] if isinstance(envvar, str) else list(envvar or [])
