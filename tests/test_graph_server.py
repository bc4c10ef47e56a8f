"""The local graph server: a real ArcadeDB JVM, started, found, reused and stopped by PID."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import neo4j
import psutil
import pytest

if TYPE_CHECKING:
    from conftest import GraphConn

from kg_etl.errors import GraphServerError
from kg_etl.graph.server import LocalGraphServer, ServerInfo

REPO_ROOT = Path(__file__).resolve().parents[1]


def _listening(pid: int) -> list[tuple[str, int]]:
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    # Java listens on an IPv6 socket bound to ::ffff:127.0.0.1, the IPv4 loopback in disguise.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _port_is_free(port: int) -> bool:
    """True when a new server could listen on ``port`` (closed connections may linger in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def _servers_under(root: Path) -> list[psutil.Process]:
    """Live JVMs whose ArcadeDB root path is under ``root`` (zombies excluded)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and f"rootPath={root}" in cmdline:
            found.append(proc)
    return found


# ---------------------------------------------------------------- one running server


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalGraphServer, ServerInfo]]:
    server = LocalGraphServer(tmp_path_factory.mktemp("server"))
    info = server.start()
    yield server, info
    server.stop()


def test_start_writes_server_json_without_secrets(running: tuple[LocalGraphServer, ServerInfo]) -> None:
    server, info = running
    assert info.uri == f"bolt://127.0.0.1:{info.bolt_port}"
    assert (info.database, info.username, info.root) == ("kg", "root", str(server.root))
    saved = server.info_path.read_text(encoding="utf-8")
    assert ServerInfo.model_validate(json.loads(saved)) == info
    assert server.password() not in saved


def test_status_and_second_start_return_the_same_server(running: tuple[LocalGraphServer, ServerInfo]) -> None:
    server, info = running
    assert server.status() == info
    assert LocalGraphServer(server.root).start().pid == info.pid


def test_password_file_is_private_and_stable(running: tuple[LocalGraphServer, ServerInfo]) -> None:
    server, _ = running
    assert stat.S_IMODE(server.password_path.stat().st_mode) == 0o600
    password = server.password()
    assert len(password) >= 24
    assert LocalGraphServer(server.root).password() == password


def test_password_never_on_the_command_line(running: tuple[LocalGraphServer, ServerInfo]) -> None:
    server, info = running
    cmdline = " ".join(psutil.Process(info.pid).cmdline())
    assert "ArcadeDBServer" in cmdline
    assert server.password() not in cmdline
    assert server.password() not in server.log_path.read_text(encoding="utf-8")
    assert not (server.root / ".server.args").exists()  # the @argfile is gone once the JVM read it


def test_listens_on_loopback_only(running: tuple[LocalGraphServer, ServerInfo]) -> None:
    _, info = running
    listening = _listening(info.pid)
    assert {port for _, port in listening} == {info.bolt_port, info.http_port}
    assert all(_is_loopback(ip) for ip, _ in listening), listening


def test_data_and_log_stay_under_root(running: tuple[LocalGraphServer, ServerInfo]) -> None:
    server, info = running
    assert psutil.Process(info.pid).cwd() == str(server.data_dir)
    assert (server.data_dir / "databases" / "kg").is_dir()
    assert (server.data_dir / "log").is_dir()
    assert "ArcadeDB Server started" in server.log_path.read_text(encoding="utf-8")


def test_queries_run_with_the_stored_password(running: tuple[LocalGraphServer, ServerInfo]) -> None:
    server, info = running
    with neo4j.GraphDatabase.driver(info.uri, auth=(info.username, server.password())) as driver:
        records, _, _ = driver.execute_query("RETURN 40 + 2 AS answer", database_=info.database)
    assert records[0]["answer"] == 42


# ---------------------------------------------------------------- lifecycle across processes


_START_IN_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kg_etl.graph.server import LocalGraphServer
    print(LocalGraphServer(Path(sys.argv[1])).start().pid)
    """
)


def test_concurrent_starts_share_one_server_that_outlives_them_and_stops(tmp_path: Path) -> None:
    root = tmp_path / "graph"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", _START_IN_CHILD, str(root)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    pids = {int(child.communicate(timeout=120)[0]) for child in children}
    assert [child.returncode for child in children] == [0, 0]
    assert len(pids) == 1  # the lock made the second process reuse the first one's server
    server = LocalGraphServer(root)
    info = server.status()
    assert info is not None and info.pid == pids.pop()  # alive after both starting processes exited

    assert server.stop() is True

    assert not psutil.pid_exists(info.pid) or psutil.Process(info.pid).status() == psutil.STATUS_ZOMBIE
    assert _port_is_free(info.bolt_port) and _port_is_free(info.http_port)
    assert not server.info_path.exists()
    assert server.status() is None
    assert server.stop() is False


def _fake_info(pid: int, root: Path) -> ServerInfo:
    return ServerInfo(
        uri="bolt://127.0.0.1:1", pid=pid, database="kg", username="root", bolt_port=1, http_port=2, root=str(root)
    )


def test_stale_server_json_is_cleaned(tmp_path: Path) -> None:
    server = LocalGraphServer(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = _fake_info(gone.pid, tmp_path)
    server.info_path.write_text(stale.model_dump_json(), encoding="utf-8")
    assert server.status() is None
    assert not server.info_path.exists()
    server.info_path.write_text(stale.model_dump_json(), encoding="utf-8")
    assert server.stop() is False


def test_a_reused_pid_is_not_taken_for_the_server(tmp_path: Path) -> None:
    server = LocalGraphServer(tmp_path)
    # This pytest process is alive but is no ArcadeDB: stop() must neither signal nor claim it.
    me = _fake_info(os.getpid(), tmp_path)
    server.info_path.write_text(me.model_dump_json(), encoding="utf-8")
    assert server.stop() is False


# ---------------------------------------------------------------- failures


def test_busy_bolt_port_fails_and_leaves_no_jvm(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = LocalGraphServer(tmp_path, bolt_port=busy.getsockname()[1])
        # Which log line gets summarised first depends on timing; both say the port is taken.
        with pytest.raises(GraphServerError, match=r"Error starting plugin|Unable to listen for BOLT") as caught:
            server.start(timeout=60)
    assert "\n" not in str(caught.value)
    assert server.password() not in str(caught.value)
    assert not server.info_path.exists()
    assert _servers_under(tmp_path) == []


def test_busy_http_port_fails_and_leaves_no_jvm(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = LocalGraphServer(tmp_path, http_port=busy.getsockname()[1])
        with pytest.raises(GraphServerError, match="HTTP"):
            server.start(timeout=60)
    assert _servers_under(tmp_path) == []


def test_jvm_that_dies_at_start_raises_with_its_reason(tmp_path: Path) -> None:
    server = LocalGraphServer(tmp_path, heap_mb=1)  # too small a heap: the JVM exits at once
    with pytest.raises(GraphServerError, match=r"exited with code \d+: .*heap"):
        server.start(timeout=60)
    assert not server.info_path.exists()


def test_missing_arcadedb_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "arcadedb_embedded" else find_spec(name, *a)
    )
    with pytest.raises(GraphServerError, match=r"pip install 'kg-etl\[local\]'"):
        LocalGraphServer(tmp_path).start()


def test_default_server_lives_under_kg_etl_home(kg_etl_home: Path) -> None:
    from kg_etl.graph.server import default_server

    assert default_server().root == kg_etl_home / "graph"


# ---------------------------------------------------------------- the graph fixture


@pytest.mark.parametrize("round_", [1, 2])
def test_graph_fixture_gives_a_clean_graph_with_constraints_and_merge(graph: neo4j.Driver, round_: int) -> None:
    # Run twice: whichever round runs second proves that the first one's data and schema are gone.
    assert graph.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"] == 0
    assert graph.execute_query("SHOW CONSTRAINTS").records == []
    graph.execute_query("CREATE CONSTRAINT document_id IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE")
    rows = [{"id": "a", "props": {"title": "A"}}, {"id": "b", "props": {"title": "B"}}]
    merge = "UNWIND $rows AS row MERGE (d:Document {id: row.id}) SET d += row.props"
    graph.execute_query(merge, rows=rows)
    graph.execute_query(merge, rows=rows)  # idempotent
    records = graph.execute_query("MATCH (d:Document) RETURN d.id AS id, d.title AS title ORDER BY id").records
    assert [r.data() for r in records] == [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]
    with pytest.raises(neo4j.exceptions.ConstraintError):
        graph.execute_query("CREATE (:Document {id: 'a'})")


def test_graph_env_exports_the_connection(graph_env: GraphConn) -> None:
    assert os.environ["NEO4J_URI"] == graph_env.uri
    assert os.environ["NEO4J_DATABASE"] == "kg"
    auth = (os.environ["NEO4J_USERNAME"], os.environ["NEO4J_PASSWORD"])
    with neo4j.GraphDatabase.driver(os.environ["NEO4J_URI"], auth=auth) as driver:
        driver.verify_connectivity()
    assert graph_env.password not in repr(graph_env)
