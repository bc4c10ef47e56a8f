"""Fault tolerance, for real: a killed graph server, a SIGKILLed or Ctrl-C'd ingest, two ingests at once, a
database that is still starting, and credentials that never leak.

Each scenario runs ``python -m kg_etl ingest`` as a separate process against a real Bolt server, interrupts
it once its first batch is committed, reruns it, and compares the graph with an uninterrupted run: the same
node and relationship counts and the same ids.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neo4j
import pytest

from kg_etl.graph.server import LocalGraphServer
from kg_etl.samples import make_pdf
from tests.conftest import GraphConn, reset_database

BATCH = 2
ARGS = ["--deterministic", "--batch", str(BATCH), "--chunk-tokens", "64", "--overlap-tokens", "8",
        "--extract", "summary", "--quiet"]  # fmt: skip


def _pages(doc: int) -> list[list[str]]:
    return [
        [f"Document {doc}, page {page}: the river {name} flows through the valley of {name}ia."
         for name in ("Arla", "Borne", "Cetra", "Dunn")]
        for page in range(1, 5)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pdfs")
    for doc in (1, 2):
        make_pdf(path / f"doc{doc}.pdf", _pages(doc), title=f"Rivers {doc}")
    return path


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    nodes: frozenset[str]
    relationships: frozenset[tuple[str, str, str]]


def snapshot(driver: neo4j.Driver) -> Snapshot:
    """Counts per label and type, every node id, and every relationship as (start id, type, end id)."""
    records, _, _ = driver.execute_query("MATCH (n) UNWIND labels(n) AS l RETURN l, count(*) AS n")
    counts = {r["l"]: r["n"] for r in records}
    records, _, _ = driver.execute_query("MATCH (a)-[r]->(b) RETURN a.id AS a, type(r) AS t, b.id AS b")
    relationships = frozenset((r["a"], r["t"], r["b"]) for r in records)
    for _, kind, _ in relationships:
        counts[kind] = counts.get(kind, 0) + 1
    records, _, _ = driver.execute_query("MATCH (n) RETURN n.id AS id")
    return Snapshot(counts, frozenset(r["id"] for r in records), relationships)


def _env(conn: GraphConn, home: Path, **extra: str) -> dict[str, str]:
    env = os.environ | {
        "NEO4J_URI": conn.uri, "NEO4J_USERNAME": conn.username, "NEO4J_PASSWORD": conn.password,
        "NEO4J_DATABASE": conn.database, "KG_ETL_HOME": str(home), "KG_ETL_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    return env | extra


def start_ingest(folder: Path, model: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "kg_etl", "ingest", str(folder), "--model", str(model), *ARGS, *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_ingest(folder: Path, model: Path, env: dict[str, str], *extra: str) -> tuple[int, str]:
    proc = start_ingest(folder, model, env, *extra)
    output, _ = proc.communicate(timeout=240)
    return proc.returncode, output


def wait_for_chunks(driver: neo4j.Driver, proc: subprocess.Popen[str], at_least: int = 1) -> int:
    """Block until the ingest has committed a batch; fail if it ends first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ingest ended before it could be interrupted: {proc.communicate()[0]}"
        try:
            records, _, _ = driver.execute_query("MATCH (c:Chunk) RETURN count(c) AS n")
        except neo4j.exceptions.Neo4jError:
            records = []
        if records and records[0]["n"] >= at_least:
            return int(records[0]["n"])
        time.sleep(0.05)
    raise AssertionError("no batch was committed within 120 s")


def assert_whole_batches(driver: neo4j.Driver) -> None:
    """What an interruption leaves behind: whole batches only, each chunk linked and with its status."""
    records, _, _ = driver.execute_query(
        "MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk) RETURN d.id AS doc, count(c) AS n, "
        "sum(CASE WHEN c.status IN ['done', 'failed'] THEN 1 ELSE 0 END) AS with_status"
    )
    for r in records:
        assert r["n"] == r["with_status"]
    records, _, _ = driver.execute_query("MATCH (s:Summary)-[:SUMMARIZES]->(c:Chunk) RETURN count(s) AS n")
    summaries = records[0]["n"]
    records, _, _ = driver.execute_query("MATCH (c:Chunk) RETURN count(c) AS n")
    assert summaries == records[0]["n"], "a chunk without its extractions: a half-written batch"


@pytest.fixture(scope="module")
def clean_run(
    graph_server: GraphConn,
    graph_driver: neo4j.Driver,
    folder: Path,
    tiny_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Snapshot, dict[str, Any]]:
    """The graph and the report of an uninterrupted run."""
    reset_database(graph_server)
    home = tmp_path_factory.mktemp("home")
    code, output = run_ingest(folder, tiny_model_path, _env(graph_server, home), "--report", str(home / "r.json"))
    assert code == 0, output
    return snapshot(graph_driver), json.loads((home / "r.json").read_text())


@pytest.fixture
def baseline(clean_run: tuple[Snapshot, dict[str, Any]]) -> Snapshot:
    """The graph of an uninterrupted run."""
    return clean_run[0]


def test_baseline_is_complete(baseline: Snapshot) -> None:
    assert baseline.counts["Document"] == 2
    assert baseline.counts["Chunk"] > 4 * BATCH  # enough batches to interrupt in the middle
    assert baseline.counts["SUMMARIZES"] == baseline.counts["Chunk"] + 2


def test_sigkill_mid_batch_then_rerun_gives_the_same_graph(
    baseline: Snapshot,
    graph: neo4j.Driver,
    graph_server: GraphConn,
    folder: Path,
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    env = _env(graph_server, tmp_path / "home")
    proc = start_ingest(folder, tiny_model_path, env)
    wait_for_chunks(graph, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert_whole_batches(graph)
    assert snapshot(graph).counts["Chunk"] < baseline.counts["Chunk"]

    code, output = run_ingest(folder, tiny_model_path, env)
    assert code == 0, output
    assert snapshot(graph) == baseline


def test_ctrl_c_commits_the_batch_in_hand_and_exits_cleanly(
    baseline: Snapshot,
    graph: neo4j.Driver,
    graph_server: GraphConn,
    folder: Path,
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    env = _env(graph_server, tmp_path / "home")
    proc = start_ingest(folder, tiny_model_path, env)
    wait_for_chunks(graph, proc)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "rerun" in output and "Traceback" not in output
    assert_whole_batches(graph)
    records, _, _ = graph.execute_query("MATCH (d:Document) RETURN d.status AS s, d.owner AS owner")
    assert all(r["owner"] is None for r in records), "the claim must be released"
    assert {r["s"] for r in records} <= {"pending", "done"}

    code, output = run_ingest(folder, tiny_model_path, env)
    assert code == 0, output
    assert snapshot(graph) == baseline


def test_graph_server_killed_mid_ingest(
    baseline: Snapshot, folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    # Fixed ports, so the restarted server is where the rerun and the driver look for it.
    server = LocalGraphServer(tmp_path / "graph", bolt_port=_free_port(), http_port=_free_port())
    info = server.start()
    conn = GraphConn(info.uri, info.username, server.password(), info.database, info)
    env = _env(conn, tmp_path / "home", KG_ETL_CONNECT_TIMEOUT="2")
    with neo4j.GraphDatabase.driver(conn.uri, auth=(conn.username, conn.password)) as driver:
        try:
            proc = start_ingest(folder, tiny_model_path, env)
            wait_for_chunks(driver, proc)
            os.kill(info.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 3, output
            error_lines = [line for line in output.splitlines() if line.startswith("error:")]
            assert len(error_lines) == 1 and "unreachable" in error_lines[0], output
            assert "Traceback" not in output

            server.start()
            driver.verify_connectivity()
            assert_whole_batches(driver)
            code, output = run_ingest(folder, tiny_model_path, env)
            assert code == 0, output
            assert snapshot(driver) == baseline
        finally:
            server.stop()


def test_two_ingests_at_once_neither_corrupts_nor_double_writes(
    baseline: Snapshot,
    graph: neo4j.Driver,
    graph_server: GraphConn,
    folder: Path,
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    reports = [tmp_path / "a.json", tmp_path / "b.json"]
    procs = [
        start_ingest(folder, tiny_model_path, _env(graph_server, tmp_path / f"home{i}"), "--report", str(report))
        for i, report in enumerate(reports)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output
    assert snapshot(graph) == baseline
    done_by = [
        {Path(d["path"]).name for d in json.loads(r.read_text())["documents"] if d["status"] == "done"} for r in reports
    ]
    assert not done_by[0] & done_by[1], f"a document was processed by both: {done_by}"
    assert done_by[0] | done_by[1] == {"doc1.pdf", "doc2.pdf"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_still_starting_is_waited_for_then_a_clear_error(
    folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    bolt, http = _free_port(), _free_port()
    server = LocalGraphServer(tmp_path / "graph", bolt_port=bolt, http_port=http)
    password = server.password()
    conn_env = {"NEO4J_URI": f"bolt://127.0.0.1:{bolt}", "NEO4J_USERNAME": "root", "NEO4J_PASSWORD": password,
                "NEO4J_DATABASE": "kg", "KG_ETL_HOME": str(tmp_path / "home"), "KG_ETL_THREADS": "1"}  # fmt: skip

    started = time.monotonic()
    code, output = run_ingest(folder, tiny_model_path, os.environ | conn_env | {"KG_ETL_CONNECT_TIMEOUT": "3"})
    assert code == 3
    assert "unreachable" in output and "gave up after 3 s" in output and "Traceback" not in output
    assert time.monotonic() - started < 30

    proc = start_ingest(folder, tiny_model_path, os.environ | conn_env | {"KG_ETL_CONNECT_TIMEOUT": "90"})
    try:
        time.sleep(1.0)
        assert proc.poll() is None, "ingest must wait for the database"
        server.start()
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output
    finally:
        server.stop()


def test_credentials_never_appear_in_output_logs_or_report(
    graph: neo4j.Driver, graph_server: GraphConn, folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    secret_pdf = tmp_path / "secret"
    secret_pdf.mkdir()
    make_pdf(secret_pdf / "locked.pdf", [["A locked page about rivers and valleys."]], password="pdf-pass-9f3k")
    report = tmp_path / "report.json"
    env = _env(graph_server, tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-m", "kg_etl", "-vv", "ingest", str(secret_pdf), "--model", str(tiny_model_path),
         *ARGS, "--password", "pdf-pass-9f3k", "--report", str(report)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    everything = proc.stdout + proc.stderr + report.read_text()
    for secret in (graph_server.password, "pdf-pass-9f3k"):
        assert secret not in everything


# -- a crash inside llama.cpp, and what a run keeps of the work it had done --------------------------------------


def test_a_native_crash_in_the_model_worker_is_one_line_and_a_rerun_resumes(
    clean_run: tuple[Snapshot, dict[str, Any]],
    graph: neo4j.Driver,
    graph_server: GraphConn,
    folder: Path,
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    baseline, clean = clean_run
    env = _env(graph_server, tmp_path / "home")
    # A real SIGSEGV in the worker after 3 replies: batch 1 (2 chunks, 1 summary each) is written, and the
    # first reply of batch 2 is in hand when it dies.
    code, output = run_ingest(
        folder, tiny_model_path, env | {"KG_ETL_TEST_FAULTS": "worker-crash-after=3"}, "--report", f"{tmp_path}/r.json"
    )
    assert code == 4, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for words in ("tiny-lfm2.gguf", "SIGSEGV", "doc1.pdf chunks 3-4, pages", "rerun the same command"):
        assert words in errors[0], errors[0]
    assert "Traceback" not in output
    assert_whole_batches(graph)
    records, _, _ = graph.execute_query("MATCH (d:Document) RETURN d.status AS s, d.owner AS owner")
    assert [(r["s"], r["owner"]) for r in records] == [("pending", None)], "resumable, and not claimed"
    crashed = json.loads((tmp_path / "r.json").read_text())
    assert "SIGSEGV" in crashed["error"] and crashed["documents"][0]["status"] == "interrupted"
    assert crashed["llm_calls"] == 3

    code, output = run_ingest(folder, tiny_model_path, env, "--report", f"{tmp_path}/r2.json")
    assert code == 0, output
    assert snapshot(graph) == baseline
    # The reply that arrived before the crash was cached at once: only the missing work is asked for.
    assert json.loads((tmp_path / "r2.json").read_text())["llm_calls"] == clean["llm_calls"] - 3


def test_a_probe_that_crashes_falls_back_once_and_is_remembered(
    graph: neo4j.Driver, graph_server: GraphConn, folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "placement.json"
    env = _env(graph_server, tmp_path / "home", KG_ETL_PLACEMENT_CACHE=str(cache))
    code, output = run_ingest(
        folder, tiny_model_path, env | {"KG_ETL_TEST_FAULTS": "probe-crash-repack"}, "--report", f"{tmp_path}/r.json"
    )
    assert code == 0, output
    assert output.count("using plain CPU buffers") == 1 and "SIGSEGV" in output
    assert json.loads((tmp_path / "r.json").read_text())["models"][0]["placement"].startswith("plain")
    remembered = cache.read_text()

    reset_database(graph_server)  # the same work again, with an empty extraction cache: the model is needed
    env = _env(graph_server, tmp_path / "home2", KG_ETL_PLACEMENT_CACHE=str(cache))
    code, output = run_ingest(folder, tiny_model_path, env, "--report", f"{tmp_path}/r2.json")
    assert code == 0, output
    assert "using plain CPU buffers" not in output and cache.read_text() == remembered
    assert json.loads((tmp_path / "r2.json").read_text())["models"][0]["placement"].startswith("plain")


def test_ctrl_c_twice_still_writes_the_summary_and_the_report(
    graph: neo4j.Driver, graph_server: GraphConn, folder: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    proc = start_ingest(folder, tiny_model_path, _env(graph_server, tmp_path / "home"), "--report", str(report))
    wait_for_chunks(graph, proc)
    for _ in range(2):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "ingested" in output and "rerun" in output and "Traceback" not in output
    written = json.loads(report.read_text())
    assert written["interrupted"] and written["llm_calls"] > 0
    assert_whole_batches(graph)
