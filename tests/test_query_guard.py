"""``kg-etl query`` is read-only because the server says so: bypass shapes, files, procedures, timeouts, Ctrl-C.

On kg-etl's local server (ArcadeDB) the query runs as its read-only user, with LOAD CSV's file and URL
access off; a query past --timeout, or interrupted, is ended on the server. Each case runs on the real
server and checks that nothing changed: nodes, labels, indexes and constraints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import neo4j
import psutil
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.graph.connection import plan_problem
from tests.conftest import GraphConn

RUNAWAY = "UNWIND range(1, 3000000) AS x UNWIND range(1, 3000000) AS y RETURN count(*) AS n"

ATTACKS = [
    "CALL apoc.do.when(true, \"LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row\", '', {}) "
    "YIELD value RETURN value",
    "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row",
    "LOAD CSV FROM 'http://127.0.0.1:9/x.csv' AS row RETURN row",
    "CREATE (n:Probe {x: 1}) RETURN n",
    "/* a comment first */ CREATE (n:Probe)",
    "MATCH (n) // a comment\nDETACH DELETE n",
    "MERGE (n:Probe {x: 1}) RETURN n",
    "MATCH (d:Document) SET d.status = 'pwned'",
    "MATCH (d:Document) SET d:Probe",
    "INSERT (:Probe {x: 1})",
    "CALL { CREATE (:Probe) } IN TRANSACTIONS",
    "FOREACH (i IN [1] | CREATE (:Probe))",
    "CALL apoc.merge.node(['Probe'], {x: 1}) YIELD node RETURN node",
    "CALL apoc.refactor.cloneNodesWithRelationships([]) YIELD output RETURN output",
    "DROP CONSTRAINT document_id",
    "CREATE INDEX probe FOR (n:Probe) ON (n.x)",
    "CREATE CONSTRAINT probe FOR (n:Probe) REQUIRE n.x IS UNIQUE",
    "CREATE USER evil SET PASSWORD 'evil-pass-1'",
]


def _state(driver: neo4j.Driver) -> dict[str, Any]:
    def rows(query: str) -> list[Any]:
        return sorted(str(r.data()) for r in driver.execute_query(query).records)

    return {
        "nodes": rows("MATCH (n) RETURN labels(n) AS l, properties(n) AS p"),
        "labels": rows("CALL db.labels() YIELD label RETURN label"),
        "indexes": rows("SHOW INDEXES YIELD name RETURN name"),
        "constraints": rows("SHOW CONSTRAINTS YIELD name RETURN name"),
    }


@pytest.fixture
def schema_and_data(graph: neo4j.Driver, graph_env: GraphConn) -> dict[str, Any]:
    assert CliRunner().invoke(cli, ["schema", "apply"]).exit_code == 0
    graph.execute_query("CREATE (:Document {id: 'd1', status: 'done'})")
    return _state(graph)


@pytest.mark.parametrize("query", ATTACKS)
def test_a_query_that_would_write_or_read_files_is_refused_and_changes_nothing(
    query: str, schema_and_data: dict[str, Any], graph: neo4j.Driver, graph_env: GraphConn
) -> None:
    result = CliRunner().invoke(cli, ["query", query], env=graph_env.reader_env)
    assert result.exit_code == 3, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and "root:" not in result.output  # /etc/passwd's first line
    assert _state(graph) == schema_and_data
    assert "was rolled back" not in line  # no claim that the server may not have kept


def test_reads_still_work_for_the_read_only_user(schema_and_data: dict[str, Any], graph_env: GraphConn) -> None:
    result = CliRunner().invoke(cli, ["query", "MATCH (d:Document) RETURN d.status AS s", "--json"],
                                env=graph_env.reader_env)  # fmt: skip
    assert result.exit_code == 0 and '"s": "done"' in result.stdout


def _server_cpu(conn: GraphConn, seconds: float = 1.0) -> float:
    return float(psutil.Process(conn.info.pid).cpu_percent(interval=seconds))


def _running(driver: neo4j.Driver) -> list[str]:
    records = driver.execute_query("SHOW TRANSACTIONS YIELD currentQuery RETURN currentQuery AS q").records
    return [r["q"] for r in records if "UNWIND range" in str(r["q"])]


def test_a_runaway_query_is_stopped_on_the_server_at_its_timeout(graph: neo4j.Driver, graph_env: GraphConn) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["query", RUNAWAY, "--timeout", "2"], env=graph_env.reader_env)
    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 20
    assert "ran past --timeout 2 s and was stopped on the server" in result.stderr
    time.sleep(0.5)
    assert _running(graph) == [] and _server_cpu(graph_env) < 50


def test_ctrl_c_stops_the_query_on_the_server_too(graph: neo4j.Driver, graph_env: GraphConn) -> None:
    env = os.environ | graph_env.reader_env
    proc = subprocess.Popen([sys.executable, "-m", "kg_etl", "query", RUNAWAY], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _running(graph) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _running(graph), "the query never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(0.5)
    assert _running(graph) == [] and _server_cpu(graph_env) < 50


def test_the_local_server_runs_queries_as_its_read_only_user(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEO4J_URI", "NEO4J_USERNAME", "NEO4J_PASSWORD", "NEO4J_DATABASE"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    try:
        assert runner.invoke(cli, ["schema", "apply"]).exit_code == 0  # starts it, as root
        refused = runner.invoke(cli, ["query", "CREATE (n:Probe) RETURN n"])
        assert refused.exit_code == 3 and "refused this one" in refused.stderr
        passwd = runner.invoke(cli, ["query", "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row"])
        assert passwd.exit_code == 3 and "root:" not in passwd.output
        counted = runner.invoke(cli, ["query", "MATCH (n:Probe) RETURN count(n) AS n", "--json"])
        assert counted.exit_code == 0 and '"n": 0' in counted.stdout
    finally:
        runner.invoke(cli, ["graph", "stop"])


@pytest.mark.parametrize(
    ("plan", "problem"),
    [
        ({"operatorType": "ProduceResults", "children": [{"operatorType": "AllNodesScan"}]}, None),
        ({"operatorType": "ProduceResults", "children": [{"operatorType": "LoadCSV@neo4j"}]}, "LOAD CSV"),
        (
            {"operatorType": "ProcedureCall@neo4j", "args": {"Details": "db.labels() :: (label :: STRING)"}},
            None,
        ),
        (
            {"operatorType": "ProduceResults", "children": [
                {"operatorType": "ProcedureCall@neo4j", "args": {"Details": "apoc.load.json($url) :: (value)"}}]},
            "apoc.load.json",
        ),
    ],
)  # fmt: skip
def test_on_neo4j_the_plan_may_hold_no_load_csv_and_only_read_only_procedures(
    plan: dict[str, Any], problem: str | None
) -> None:
    found = plan_problem(plan)
    assert found is None if problem is None else (found is not None and problem in found)
