"""``kg-etl ingest --llm URL``: the user's own OpenAI-compatible model server, through LangChain's chat model.

The server is real: llama-cpp-python's own (``tests/openai_server.py``, its ``server`` extra) on loopback,
serving SmolLM2-135M-Instruct, whose replies nobody scripted. It refuses OpenAI's ``json_schema`` format
and takes llama.cpp's ``json_object`` + ``schema``, so the format ladder is exercised for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import neo4j
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from kg_etl.cli import cli
from kg_etl.config import IngestSettings
from kg_etl.errors import ModelError
from kg_etl.extract.base import Job
from kg_etl.extract.keywords import KEYWORDS
from kg_etl.llm.prompt import chunk_messages
from kg_etl.llm.server import FORMATS, ServerBackend, ServerPool
from kg_etl.models import Chunk
from kg_etl.samples import make_pdf

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

TEXT = "The Great Barrier Reef lies off the coast of Queensland, Australia. It is the largest coral reef system."


@pytest.fixture(scope="module")
def server_url(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2, on a free loopback port."""
    [port] = _free_ports(1)
    log = tmp_path_factory.mktemp("llm-server") / "server.log"
    script = Path(__file__).parent / "openai_server.py"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(smollm2_path), str(port)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _free_ports(count: int) -> list[int]:
    from kg_etl.graph import server

    return server._free_ports(count)


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the model server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the model server did not start: {log.read_text()[-2000:]}")


def _chunk() -> Chunk:
    return Chunk(id="c1", doc_id="d1", index=0, text=TEXT, page_start=1, page_end=1, char_start=0,
                 char_end=len(TEXT), n_tokens=30)  # fmt: skip


def test_ingest_through_the_server_records_every_outcome_and_reingest_makes_no_call(
    server_url: str, graph_env: object, graph: neo4j.Driver, tmp_path: Path
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "reef.pdf", [TEXT.split(". ")], title="The Great Barrier Reef")
    args = ["ingest", str(folder), "--llm", server_url, "--llm-concurrency", "2", "--deterministic", "--quiet"]
    args += ["--extract", "keywords,summary,qa,validate"]
    first = CliRunner().invoke(cli, [*args, "--report", str(tmp_path / "first.json")])
    assert first.exit_code in (0, 1), first.output  # 1: an extraction failed, and the report says which
    report = json.loads((tmp_path / "first.json").read_text())
    [use] = report["models"]
    assert use["server"] == server_url and use["model_id"].startswith(f"server:{server_url}:")
    assert use["calls"] == report["llm_calls"] > 0 and use["placement"] == "json_object_schema replies"
    doc = report["documents"][0]
    failed = {f["extractor"] for f in doc["failures"]}
    assert all(name in doc["extractions"] or name in failed for name in ("keywords", "summary", "qa"))
    assert f"on {server_url}" in first.output
    chunks = graph.execute_query("MATCH (c:Chunk) RETURN count(c) AS n").records[0]["n"]
    assert chunks == doc["chunks_written"] == 1

    again = CliRunner().invoke(cli, [*args, "--report", str(tmp_path / "again.json")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again.json").read_text())["llm_calls"] == 0


def test_a_server_that_refuses_json_schema_is_asked_with_the_next_format(server_url: str, smollm2_path: Path) -> None:
    backend = ServerBackend(server_url, str(smollm2_path), "none", concurrency=2, deterministic=True)
    jobs = [Job(tuple(chunk_messages(_chunk(), "", KEYWORDS.task)), KEYWORDS.schema, TEXT)] * 3
    arrived: list[int] = []
    replies = backend.run(jobs, on_reply=lambda i, _: arrived.append(i))
    assert backend.format == FORMATS[1]  # llama-cpp-python's server: json_object with a schema
    assert sorted(arrived) == [0, 1, 2] and len(replies) == 3
    assert all(r.text.lstrip().startswith("{") for r in replies)
    assert backend.stats.calls == 3 and backend.stats.completion_tokens > 0


def test_a_reply_that_names_what_the_text_does_not_is_sent_back(server_url: str, smollm2_path: Path) -> None:
    from kg_etl.llm.server import _check

    job = Job(tuple(chunk_messages(_chunk(), "", KEYWORDS.task)), KEYWORDS.schema, TEXT)
    assert _check(job, json.dumps({"keywords": [{"term": "coral reef system", "relevance": 0.9}]})) is None
    error = _check(job, json.dumps({"keywords": [{"term": "Pacific Ocean", "relevance": 0.9}]}))
    assert error is not None and "'Pacific Ocean'" in error and "word for word" in error


def test_an_unreachable_server_or_model_is_one_line_before_anything_starts(
    server_url: str, graph_env: object, tmp_path: Path
) -> None:
    [closed] = _free_ports(1)  # free now, so nothing answers there
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--llm", f"http://127.0.0.1:{closed}/v1"])
    assert result.exit_code == 3 and "is the server running?" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--llm", server_url, "--llm-model", "gpt-99"])
    assert result.exit_code == 3 and "does not serve 'gpt-99'" in result.output
    with pytest.raises(ModelError, match="is the server running"):
        ServerPool(IngestSettings(llm_url=f"http://127.0.0.1:{closed}/v1", llm_api_key=SecretStr("k")))


def test_llm_is_refused_beside_per_extractor_models_and_ray() -> None:
    result = CliRunner().invoke(cli, ["ingest", ".", "--llm", "http://x/v1", "--model-for", "validate=m"])
    assert result.exit_code == 2 and "drop --model-for" in result.output
    result = CliRunner().invoke(cli, ["ingest", ".", "--llm", "http://x/v1", "--ray", "local"])
    assert result.exit_code == 2 and "--llm-concurrency" in result.output
