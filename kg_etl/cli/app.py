"""The ``kg-etl`` group: the one place where errors become one line, exit codes, consoles, shared options,
and the config file (``kg-etl.toml``) as click's default map.

Precedence of every option: the command line, then its environment variable, then the config file, then
the default in ``kg_etl.defaults``. Click resolves exactly that order when the file is its ``default_map``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kg_etl import __version__
from kg_etl import defaults as d
from kg_etl.errors import ConfigError, GraphServerError, KgEtlError, WorkerCrashedError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from kg_etl.graph.connection import Graph

__all__ = [
    "EXIT_CRASH",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "GRAPH_PARAMS",
    "add_row",
    "chunk_options",
    "cli",
    "default_map",
    "err",
    "graph_options",
    "main",
    "open_graph",
    "option_keys",
    "out",
    "say",
    "table",
]

F = TypeVar("F", bound=Callable[..., Any])

# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_PARTIAL = 1  # the run finished, but some documents or chunks failed (see the summary / --report)
EXIT_USAGE = 2  # bad options (click's own code)
EXIT_ERROR = 3  # nothing could be done: graph unreachable, model missing, bad configuration
EXIT_CRASH = 4  # a model's worker process died (a crash inside llama.cpp); rerun to resume
EXIT_INTERRUPTED = 130  # Ctrl-C; rerun to resume


# -- output -------------------------------------------------------------------------------------------------


@functools.cache
def err() -> Console:
    """The stderr console: progress, notices, errors. Made on first use: rich is not imported for --help."""
    from rich.console import Console

    return Console(stderr=True)


@functools.cache
def out() -> Console:
    """The stdout console. Piped output is as wide as $COLUMNS (else 200), not rich's 80, so tables stay whole."""
    from rich.console import Console

    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 0) or 200
    return Console(width=width)


def say(message: str, *, stderr: bool = True, style: str | None = None) -> None:
    """Print one message as it is: user text (file names, queries, errors) is never read as rich markup."""
    from kg_etl.models import text_of

    console = err() if stderr else out()
    console.print(text_of(message), markup=False, highlight=False, soft_wrap=True, style=style)


def table(*columns: str) -> Table:
    """A table whose cells fold rather than being cut with an ellipsis; fill it with ``add_row``."""
    from rich.table import Table

    grid = Table()
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid


def add_row(grid: Table, *cells: object) -> None:
    """A row of plain text: a value such as ``report[/x].pdf`` is shown as it is, never read as markup."""
    from rich.text import Text

    from kg_etl.models import text_of

    grid.add_row(*(Text(text_of(str(cell))) for cell in cells))


# -- the group -----------------------------------------------------------------------------------------------


class _KgEtlGroup(click.Group):
    """Turns every ``KgEtlError`` into one line on stderr and an exit code, for CliRunner too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KgEtlError as e:
            say(f"error: {e}", style="red")
            ctx.exit(EXIT_CRASH if isinstance(e, WorkerCrashedError) else EXIT_ERROR)


def main() -> None:
    """Entry point of the ``kg-etl`` console script."""
    try:
        code = cli.main(prog_name="kg-etl", standalone_mode=False)
    except click.exceptions.Abort:  # a Ctrl-C that stopped at once (click turns KeyboardInterrupt into Abort)
        say("interrupted: rerun the same command to resume")
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    _flush_stdout()
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _flush_stdout() -> None:
    """Output that cannot be written (``> /dev/full``, a closed pipe) is one line, not a traceback at exit."""
    try:
        sys.stdout.flush()
    except OSError as e:
        # Python flushes stdout again on its way out; point it at nothing so that flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        say(f"error: cannot write to standard output ({e.strerror or e})")
        sys.exit(EXIT_ERROR)


@click.group(cls=_KgEtlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kg-etl")
@click.option("-v", "--verbose", count=True, help="More log detail on stderr: -v info, -vv debug.")
@click.option(
    "--connect-timeout",
    default=d.CONNECT_TIMEOUT_S,
    show_default=True,
    type=click.FloatRange(min=0),
    envvar="KG_ETL_CONNECT_TIMEOUT",
    help="Seconds to keep retrying a graph database that is still starting [env KG_ETL_CONNECT_TIMEOUT].",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=d.CONFIG_ENV,
    help=f"Settings file [env {d.CONFIG_ENV}; default: ./{d.CONFIG_FILE} where it exists]. "
    "`kg-etl init` writes a starter, `kg-etl config show` what is in effect.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, connect_timeout: float, config_path: Path | None) -> None:
    """kg-etl: turn a folder of PDFs into a Neo4j knowledge graph with small local LLMs.

    \b
    Examples:
      kg-etl ingest pdfs/ --batch 10
      kg-etl export qa.jsonl
      kg-etl doctor
    """
    ctx.obj = {"connect_timeout": connect_timeout, "config": None, "passwords": {}}
    _configure_logging(verbose)
    path = config_path or (Path(d.CONFIG_FILE) if Path(d.CONFIG_FILE).is_file() else None)
    if path is not None and ctx.invoked_subcommand != "init":
        from kg_etl.config import read_config

        config = read_config(path)
        ctx.obj["config"], ctx.obj["passwords"] = path, config.passwords
        assert isinstance(ctx.command, click.Group)
        ctx.default_map = default_map(ctx.command, config.sections, path)


def _configure_logging(verbose: int) -> None:
    """Standard-library logging through rich, on the same console as the progress display (never mixed)."""
    if verbose == 0:  # warnings only, and rich is not needed to print them until one comes
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", force=True)
    else:
        from rich.logging import RichHandler

        level = logging.INFO if verbose == 1 else logging.DEBUG
        handler = RichHandler(console=err(), show_path=False, markup=False, rich_tracebacks=False)
        logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler], force=True)
    # pypdf narrates every repair it makes at WARNING; the reader already reports what matters per page.
    logging.getLogger("pypdf").setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)
    logging.getLogger("neo4j").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


# -- the config file as click's default map --------------------------------------------------------------------

GRAPH_PARAMS = {"uri": "neo4j_uri", "username": "neo4j_username", "password": "neo4j_password",
                "database": "neo4j_database"}  # fmt: skip


def option_keys(command: click.Command) -> dict[str, click.Option]:
    """The config keys of a command's options: each option's long name (``batch``, ``model-for``) in either
    spelling (``model_for``), and its parameter name."""
    keys: dict[str, click.Option] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        keys[param.name] = param
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = keys[opt[2:].replace("-", "_")] = param
    return keys


def default_map(group: click.Group, sections: dict[str, dict[str, Any]], path: Path) -> dict[str, Any]:
    """The config file's sections as click's default map: one mapping of parameter values per command.

    ``[graph]`` (uri, username, password, database) applies to every command that connects to the graph;
    ``[ingest]``, ``[export]``... to that command.

    Raises:
        ConfigError: an unknown section or key, naming the file and what is allowed.
    """
    mapping: dict[str, Any] = {}
    for section, values in sections.items():
        if section == "graph":
            _graph_section(group, values, path, mapping)
            continue
        command = group.commands.get(section)
        if command is None or isinstance(command, click.Group):
            known = ", ".join(sorted(n for n, c in group.commands.items() if not isinstance(c, click.Group)))
            raise ConfigError(f"{path}: unknown section [{section}]; use [graph], [passwords] or one of {known}")
        keys = option_keys(command)
        target = mapping.setdefault(section, {})
        for key, value in values.items():
            param = keys.get(key)
            if param is None:
                choices = ", ".join(sorted(k for k in keys if "_" not in k or k not in keys))
                raise ConfigError(f"{path}: [{section}] has no key {key!r}; known keys: {choices}")
            target[str(param.name)] = _config_value(param, value, path, section, key)
    return mapping


def _graph_section(group: click.Group, values: dict[str, Any], path: Path, mapping: dict[str, Any]) -> None:
    for key, value in values.items():
        name = GRAPH_PARAMS.get(key, key)
        if name not in GRAPH_PARAMS.values():
            raise ConfigError(f"{path}: [graph] has no key {key!r}; known keys: {', '.join(GRAPH_PARAMS)}")
        for command_name, command in group.commands.items():
            if any(p.name == name for p in command.params):
                mapping.setdefault(command_name, {})[name] = str(value)


def _config_value(param: click.Option, value: Any, path: Path, section: str, key: str) -> Any:
    """A TOML value in the shape click expects for ``param``: tables and lists for the options that take them."""
    if isinstance(value, dict):
        if not param.multiple:  # model_for = { validate = "lfm2-700m-q4_k_m" }
            raise ConfigError(f"{path}: [{section}] {key} takes a single value, not a table")
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, list) and not param.multiple:  # categories = ["Law", "Finance"], extract = [...]
        return ",".join(str(v) for v in value)
    return value


# -- options shared by commands that must agree -----------------------------------------------------------------


def chunk_options(f: F) -> F:
    """How a PDF is read and cut: one set of options, so ``chunks`` cuts exactly as ``ingest`` does."""
    options = [
        click.option("--read-timeout", default=d.READ_TIMEOUT_S, show_default=True, type=click.FloatRange(min=1),
                     help="Seconds allowed to read one PDF."),
        click.option("--chunk-tokens", default=d.CHUNK_TOKENS, show_default=True, type=click.IntRange(32),
                     help="Token budget per chunk."),
        click.option("--overlap-tokens", default=d.OVERLAP_TOKENS, show_default=True, type=click.IntRange(0),
                     help="Tokens shared by neighbouring chunks."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


# -- the graph connection ------------------------------------------------------------------------------------------


def graph_options(f: F) -> F:
    """The Neo4j connection options, each also read from Neo4j's own environment variables."""
    options = [
        click.option(
            "--neo4j-uri",
            envvar="NEO4J_URI",
            help="Bolt URI, e.g. bolt://localhost:7687 "
            "[env NEO4J_URI]; without it kg-etl starts or reuses its local graph server.",
        ),
        click.option(
            "--neo4j-username", envvar="NEO4J_USERNAME", default="neo4j", show_default=True, help="[env NEO4J_USERNAME]"
        ),
        click.option("--neo4j-password", envvar="NEO4J_PASSWORD", help="[env NEO4J_PASSWORD]"),
        click.option("--neo4j-database", envvar="NEO4J_DATABASE", help="database name [env NEO4J_DATABASE]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@contextmanager
def open_graph(
    neo4j_uri: str | None,
    neo4j_username: str,
    neo4j_password: str | None,
    neo4j_database: str | None,
    *,
    read_only: bool = False,
) -> Iterator[Graph]:
    """The graph ``graph_options`` name, or the local server (started if needed, and said so once at the end).

    ``read_only``: on the local server, connect as its read-only user (``kg-etl query``).
    """
    from kg_etl.graph.connection import Graph

    root = click.get_current_context().find_root()
    settings, started = _graph_settings(neo4j_uri, neo4j_username, neo4j_password, neo4j_database, read_only)
    try:
        with Graph(settings) as graph:
            graph.wait_ready(root.obj["connect_timeout"])
            yield graph
    finally:
        if started is not None:
            say(
                f"the local graph server keeps running (pid {started}) for later commands: `kg-etl graph stop` stops it"
            )


def _graph_settings(
    uri: str | None, username: str, password: str | None, database: str | None, read_only: bool = False
) -> tuple[Any, int | None]:
    from pydantic import SecretStr

    from kg_etl.graph.connection import GraphSettings
    from kg_etl.graph.server import READER, default_server

    if uri:
        settings = GraphSettings(uri=uri, username=username, password=SecretStr(password or ""), database=database)
        if not settings.password.get_secret_value():
            raise click.UsageError("--neo4j-uri / NEO4J_URI is set but no password: set NEO4J_PASSWORD")
        return settings, None
    server = default_server()
    running = server.status()
    info = running or server.start()
    verb = "using" if running else "started"
    say(f"{verb} the local graph server at {info.uri} (database {info.database}); set NEO4J_URI to use your own Neo4j")
    if read_only:
        if not info.reader:
            raise GraphServerError(
                "the running local graph server was started by an older kg-etl, without the read-only user that "
                "kg-etl query needs: run `kg-etl graph stop` and the command again"
            )
        username, secret = READER, server.reader_password()
    else:
        username, secret = info.username, server.password()
    settings = GraphSettings(uri=info.uri, username=username, password=SecretStr(secret), database=info.database)
    return settings, None if running else info.pid
