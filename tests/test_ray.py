"""``kg-etl ingest --ray``: Ray in local mode, real llama.cpp with the tiny model, the real Bolt server.

One Ray instance for the module (two CPUs, no dashboard), and the single-machine run's graph of the same
folder as the reference: every Ray run must give the same ids, relationships and counts. The CLI's own
``--ray local`` (a Ray started and stopped with the run) is what users run, so it is tested once, first,
before the module's instance exists; the rest connect to the module's instance.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import neo4j
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from kg_etl.cli import cli
from kg_etl.config import IngestSettings
from kg_etl.distributed.actors import _parts
from kg_etl.graph.connection import Graph, GraphSettings
from kg_etl.graph.writer import GraphWriter
from kg_etl.llm.protocol import ChatRequest
from kg_etl.owner import is_stale
from kg_etl.read import open_pdf
from kg_etl.samples import make_pdf
from tests.conftest import GraphConn, reset_database
from tests.test_resilience import Snapshot, assert_whole_batches, snapshot, wait_for_chunks

pytestmark = pytest.mark.ray

CHUNKING = ["--deterministic", "--batch", "2", "--chunk-tokens", "64", "--overlap-tokens", "8"]
# Keywords are shared across documents (a Keyword node each), summaries need a document-level LLM pass
# after the chunks are written: both paths of the graph the lanes must leave exactly as one machine does.
EXTRACT = ["--extract", "summary,keywords"]
ACTORS = ["--ray-actors", "2", "--ray-cpus-per-actor", "0.5"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pdfs")
    for doc in (1, 2):
        pages = [
            [f"Report {doc}, page {page}: the {name} mill grinds grain from the {name} valley farms."
             for name in ("Alder", "Birch", "Cedar")]
            for page in (1, 2)
        ]  # fmt: skip
        make_pdf(path / f"report{doc}.pdf", pages, title=f"Mills {doc}")
    return path


def _env(conn: GraphConn, home: Path) -> dict[str, str]:
    return os.environ | {
        "NEO4J_URI": conn.uri, "NEO4J_USERNAME": conn.username, "NEO4J_PASSWORD": conn.password,
        "NEO4J_DATABASE": conn.database, "KG_ETL_HOME": str(home), "KG_ETL_THREADS": "1", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip


def _command(folder: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kg_etl", "ingest", str(folder), "--model", str(model), *CHUNKING, *EXTRACT,
            "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def reference(
    graph_server: GraphConn, graph_driver: neo4j.Driver, folder: Path, tiny_model_path: Path, tmp_path_factory: Any
) -> Snapshot:
    """The graph of the single-machine run of the folder."""
    reset_database(graph_server)
    home = tmp_path_factory.mktemp("home")
    proc = subprocess.run(_command(folder, tiny_model_path), env=_env(graph_server, home), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    graph = snapshot(graph_driver)
    assert graph.counts["Document"] == 2 and graph.counts["Chunk"] >= 6 and graph.counts.get("Keyword", 0) > 0
    return graph


def test_ray_local_with_two_actors_each_killed_once_builds_the_single_machine_graph(
    reference: Snapshot, graph: neo4j.Driver, graph_server: GraphConn, folder: Path, tiny_model_path: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Each actor SIGKILLs itself after its second reply (once): Ray restarts it, it loads its model again, and
    # the part it held is redone.
    env = _env(graph_server, tmp_path / "home") | {"KG_ETL_TEST_FAULTS": "ray-actor-kill-after=2"}
    report_path = tmp_path / "report.json"
    # Relative paths, as users type them: Ray's workers do not run in this folder.
    model = Path(os.path.relpath(tiny_model_path, folder.parent))
    command = _command(Path(folder.name), model, "--ray", "local", *ACTORS, "--report", str(report_path))
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, cwd=folder.parent)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert snapshot(graph) == reference
    report = json.loads(report_path.read_text())
    assert [d["status"] for d in report["documents"]] == ["done", "done"]
    assert len(report["actors"]) == 2 and report["actor_restarts"] == 2, output
    for actor in report["actors"]:
        assert actor["loads"] == 2 and len(set(actor["pids"])) == 2 and actor["tokens_per_s"] > 0, output
    assert report["models"][0]["loads"] == 4  # once per actor process, each for the rest of the run
    assert report["llm_calls"] == sum(a["calls"] for a in report["actors"])
    assert output.count("died and was restarted") == 2, output
    assert "2 model actors" in output and "2 actor restarts" in output and "Traceback" not in output


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local Ray instance for the module's other tests."""
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield str(context.address_info["address"])
    finally:
        ray.shutdown()


def _graph(conn: GraphConn) -> Graph:
    settings = GraphSettings(uri=conn.uri, username=conn.username, password=SecretStr(conn.password),
                             database=conn.database)  # fmt: skip
    return Graph(settings)


def _settings(model: Path) -> IngestSettings:
    return IngestSettings(model=str(model), deterministic=True, batch_size=2, chunk_tokens=64, overlap_tokens=8,
                          extractors=("summary", "keywords"), threads=1)  # fmt: skip


def test_a_killed_driver_reruns_to_the_same_graph_reingest_is_free_and_claims_hold(
    reference: Snapshot, ray_address: str, graph: neo4j.Driver, graph_env: GraphConn, folder: Path,
    tiny_model_path: Path, tmp_path: Path,
) -> None:  # fmt: skip
    graph_server = graph_env
    env = _env(graph_server, Path(os.environ["KG_ETL_HOME"]))
    ray_args = ["--ray", ray_address, "--ray-cpus-per-actor", "0.5"]
    proc = subprocess.Popen(_command(folder, tiny_model_path, *ray_args), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    wait_for_chunks(graph, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert_whole_batches(graph)
    assert snapshot(graph).counts["Chunk"] < reference.counts["Chunk"]

    args = ["ingest", str(folder), "--model", str(tiny_model_path), *CHUNKING, *EXTRACT, "--quiet", *ray_args]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)  # the dead driver's claim is taken over
    assert result.exit_code == 0, result.output
    assert snapshot(graph) == reference

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 LLM calls" in result.output and "2 already done" in result.output
    assert "model actor" not in result.output  # a done folder starts no actor: no model is loaded anywhere
    assert snapshot(graph) == reference

    # Another driver (on another machine) holds report1.pdf: this one leaves it alone and does report2.pdf,
    # every reply of which is in this machine's cache by now.
    reset_database(graph_server)
    with _graph(graph_server) as conn:
        conn.apply_schema()
        meta = open_pdf(folder / "report1.pdf").meta
        assert GraphWriter(conn).claim(meta, "elsewhere:4242:1", is_stale)
    report = tmp_path / "claimed.json"
    result = CliRunner().invoke(cli, [*args, "--report", str(report)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    documents = {Path(d["path"]).name: d for d in json.loads(report.read_text())["documents"]}
    assert documents["report1.pdf"]["status"] == "skipped"
    assert documents["report1.pdf"]["reason"] == "being ingested by another kg-etl process"
    assert documents["report2.pdf"]["status"] == "done" and documents["report2.pdf"]["llm_calls"] == 0


def test_without_ray_installed_the_option_is_one_clear_line(folder: Path, tiny_model_path: Path) -> None:
    # `import ray` fails as it does where Ray is not installed.
    script = "import sys; sys.modules['ray'] = None; from kg_etl.cli import main; sys.argv[0] = 'kg-etl'; main()"
    proc = subprocess.run([sys.executable, "-c", script, "ingest", str(folder), "--model", str(tiny_model_path),
                           "--ray", "local"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 3
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines == ["error: --ray needs Ray, which is not installed here: pip install 'kg-etl[ray]'"], lines


def test_a_round_is_split_over_the_actors_along_its_chunks() -> None:
    def request(chunk: str, task: str) -> ChatRequest:
        return ChatRequest(messages=(("user", chunk), ("user", task)), grammar=None, max_tokens=8)

    requests = [request(chunk, task) for chunk in "abcde" for task in ("facts", "keywords", "summary")]
    parts = _parts(requests, 2)
    assert len(parts) == 2 and sorted(i for part in parts for i in part) == list(range(15))
    for part in parts:  # a chunk's jobs stay together (its prefix is evaluated once)
        assert len({requests[i].messages[0] for i in part}) * 3 == len(part)
    assert sorted(len(p) for p in parts) == [6, 9]
    assert _parts(requests[:3], 4) == [[0, 1, 2]]  # one chunk: one part, however many actors
    assert _parts([], 2) == []
