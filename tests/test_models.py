"""Several models in one run (an extractor on a model of its own): the work order, and one model resident.

Orchestration is checked on scripted backends (which model gets which job, what comes from the cache); the
promise users care about (each model loaded once, never two at once, all closed) on a real ingest with two
tiny llama.cpp models into the live graph server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import neo4j
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from kg_etl import pipeline
from kg_etl.cli import cli
from kg_etl.config import IngestSettings
from kg_etl.extract.cache import SqliteCache
from kg_etl.extract.qa import QAPairs
from kg_etl.extract.run import BatchExtractor
from kg_etl.extract.validate import Validations
from kg_etl.llm import pool as pool_module
from kg_etl.llm.backend import LangChainBackend
from kg_etl.llm.protocol import WorkerSpec
from kg_etl.llm.runtime import model_file_id
from kg_etl.llm.worker import ModelWorker
from kg_etl.pipeline import Event, model_order, run_extractors
from kg_etl.samples import make_pdf
from tests.test_extract import (
    SOURCE,
    Script,
    ScriptedChat,
    all_extractors,
    chunk_extractors,
    forbidden,
    make_chunk,
    queue,
)

# -- the order of the work ---------------------------------------------------------------------------------


def _order(**models: str) -> list[str]:
    settings = IngestSettings(model="main", extractor_models=models)
    return model_order(settings, run_extractors(settings))


def test_one_model_unless_an_extractor_names_another() -> None:
    assert _order() == ["main"]
    assert _order(validate="judge") == ["main", "judge"]
    assert _order(facts="big", summary="big") == ["big", "main"]


def test_validation_runs_after_the_model_that_wrote_the_qa_pairs() -> None:
    # "judge" is needed first (facts) but validates too: its pass must come after the QA pairs exist.
    assert _order(facts="judge", validate="judge") == ["main", "judge"]
    assert _order(qa="asker") == ["asker", "main"]


def test_unknown_extractor_in_the_model_map_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown extractor"):
        IngestSettings(extractor_models={"factz": "m"})


# -- one model's share, then the rest from the cache ------------------------------------------------------


def _two_backends(main: ScriptedChat, judge: ScriptedChat, tmp_path: Path) -> BatchExtractor:
    first, second = LangChainBackend(main, model_id="main"), LangChainBackend(judge, model_id="judge")
    return BatchExtractor(
        first,
        all_extractors(),
        cache=SqliteCache(tmp_path / "cache.sqlite"),
        backends={"validate": second},
    )


def test_each_backend_does_its_share_and_the_full_run_reads_the_cache(tmp_path: Path) -> None:
    extractors = chunk_extractors()
    main, judge = ScriptedChat(respond=Script(extractors)), ScriptedChat(respond=Script(extractors))
    runner = _two_backends(main, judge, tmp_path)
    chunks = [make_chunk(i) for i in range(3)]

    runner.run(chunks, SOURCE, only=runner.backend)  # the main model's pass
    assert len(main.calls) == 3 * len(extractors) and not judge.calls
    runner.run(chunks, SOURCE, only=runner.backends["validate"])  # the judge's pass: QA pairs from the cache
    assert len(main.calls) == 3 * len(extractors) and len(judge.calls) == 3 * 3

    main.respond = judge.respond = forbidden  # the writing pass finds everything in the cache
    outs = runner.run(chunks, SOURCE)
    for out in outs:
        assert isinstance(out.results["qa"], QAPairs) and isinstance(out.results["validate"], Validations)
        assert all(v is not None for v in out.results["validate"].items)
        assert out.models["qa"] == "main" and out.models["validate"] == "judge" and not out.failures


def test_a_failure_in_one_models_pass_is_not_asked_again_in_the_run(tmp_path: Path) -> None:
    main = ScriptedChat(respond=queue(*["not json"] * 3))  # the first chunk's facts, through both retries
    runner = _two_backends(main, ScriptedChat(respond=forbidden), tmp_path)
    runner.extractors = [e for e in all_extractors() if e.name == "facts"]
    first = runner.run([make_chunk(0)], SOURCE, only=runner.backend)
    assert [f.extractor for f in first[0].failures] == ["facts"] and len(main.calls) == 3

    again = runner.run([make_chunk(0)], SOURCE)
    assert again[0].failures == first[0].failures and len(main.calls) == 3


# -- a real run with two models ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny LFM2 with other weights: another model as far as kg-etl can tell."""
    from kg_etl.testing import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("judge") / "tiny-judge.gguf", seed=1)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ModelWorker]]:
    """Every model worker the pool starts, in order; each start fails the test if another worker still runs."""
    loaded: list[ModelWorker] = []

    class Watched(ModelWorker):
        def __init__(self, spec: WorkerSpec) -> None:
            resident = [m.path.name for m in loaded if not m.closed]
            assert not resident, f"loading {Path(spec.path).name} while {resident} is resident"
            super().__init__(spec)
            loaded.append(self)

    monkeypatch.setattr(pool_module, "ModelWorker", Watched)
    yield loaded


@pytest.fixture
def pdfs(tmp_path: Path) -> Path:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    lines = ["The river authority met in May.", "It approved the flood budget.", "Work starts in June."]
    make_pdf(folder / "a.pdf", [lines, lines[::-1]], title="Minutes A")
    make_pdf(folder / "b.pdf", [lines[1:], lines[:1]], title="Minutes B")
    return folder


def _ingest(folder: Path, model: Path, tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, Any]]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    args = ["ingest", str(folder), "--model", str(model), "--deterministic", "--threads", "1", "--batch", "2",
            "--chunk-tokens", "32", "--overlap-tokens", "4", "--report", str(report), *extra]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.output, json.loads(report.read_text()) if report.exists() else {}


def test_validation_on_its_own_model_loads_each_model_once_and_one_at_a_time(
    pdfs: Path,
    tiny_model_path: Path,
    judge_model_path: Path,
    loads: list[ModelWorker],
    graph_env: object,
    graph: neo4j.Driver,
    tmp_path: Path,
) -> None:
    code, output, report = _ingest(pdfs, tiny_model_path, tmp_path, "--model-for", f"validate={judge_model_path}")
    assert code == 0, output
    # Two documents, two models: the main model over both, closed, then the judge over both.
    assert [m.path for m in loads] == [tiny_model_path, judge_model_path]
    assert all(m.closed for m in loads)
    assert [(m["name"], m["loads"]) for m in report["models"]] == [("tiny-lfm2", 1), ("tiny-judge", 1)]
    assert report["max_resident_models"] == 1 and "at most 1 loaded at once" in output
    assert all(d["status"] == "done" and d["llm_calls"] > 0 for d in report["documents"])

    records, _, _ = graph.execute_query(
        "MATCH (q:Question) RETURN q.model AS model, q.judge_model AS judge, q.verdict AS verdict"
    )
    assert records, "the tiny model always writes QA pairs"
    main_id, judge_id = model_file_id(tiny_model_path), model_file_id(judge_model_path)
    assert {(r["model"], r["judge"]) for r in records} == {(main_id, judge_id)}
    assert {r["verdict"] for r in records} <= {"valid", "invalid"}
    # The document summaries were reduced by the main model in its own pass, and written by the last one.
    summaries, _, _ = graph.execute_query("MATCH (s:Summary {kind: 'document'}) RETURN s.text AS text")
    assert len(summaries) == 2


def test_a_run_stopped_in_the_first_models_pass_resumes_from_the_cache(
    pdfs: Path,
    tiny_model_path: Path,
    judge_model_path: Path,
    loads: list[ModelWorker],
    graph_env: object,
    graph: neo4j.Driver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = IngestSettings(
        model=str(tiny_model_path),
        extractor_models={"validate": str(judge_model_path)},
        deterministic=True,
        threads=1,
        batch_size=2,
        chunk_tokens=32,
        overlap_tokens=4,
    )
    batches: list[Event] = []  # stop once the main model's pass has done one batch

    with _library_graph(graph_env) as graph_obj:
        stopped = pipeline.ingest(
            [pdfs], graph_obj, settings, on_event=_keep_batches(batches), should_stop=lambda: bool(batches)
        )
    assert stopped.interrupted and not stopped.documents and len(batches) == 1
    assert [m.path for m in loads] == [tiny_model_path] and all(m.closed for m in loads)
    assert stopped.llm_calls > 0
    loads.clear()

    with _library_graph(graph_env) as graph_obj:
        done = pipeline.ingest([pdfs], graph_obj, settings)
    assert done.ok and [d.status for d in done.documents] == ["done", "done"]
    assert [(m.name, m.loads) for m in done.models] == [("tiny-lfm2", 1), ("tiny-judge", 1)]
    assert [m.path for m in loads] == [tiny_model_path, judge_model_path] and all(m.closed for m in loads)
    records, _, _ = graph.execute_query("MATCH (d:Document {status: 'done'}) RETURN count(d) AS n")
    assert records[0]["n"] == 2


def _keep_batches(into: list[Event]) -> Callable[[Event], None]:
    return lambda event: into.append(event) if event.kind == "batch" else None


def _library_graph(conn: Any) -> Any:
    from pydantic import SecretStr

    from kg_etl.graph.connection import Graph, GraphSettings

    return Graph(
        GraphSettings(uri=conn.uri, username=conn.username, password=SecretStr(conn.password), database=conn.database)
    )


def test_keep_models_holds_both_and_still_closes_them(
    pdfs: Path,
    tiny_model_path: Path,
    judge_model_path: Path,
    graph_env: object,
    graph: neo4j.Driver,
    tmp_path: Path,
) -> None:
    code, output, report = _ingest(
        pdfs, tiny_model_path, tmp_path, "--model-for", f"validate={judge_model_path}", "--keep-models"
    )
    assert code == 0, output
    assert report["max_resident_models"] == 2
    assert [m["loads"] for m in report["models"]] == [1, 1]


def test_a_finished_folder_loads_no_model_at_all(
    pdfs: Path,
    tiny_model_path: Path,
    judge_model_path: Path,
    loads: list[ModelWorker],
    graph_env: object,
    graph: neo4j.Driver,
    tmp_path: Path,
) -> None:
    extra = ("--model-for", f"validate={judge_model_path}")
    assert _ingest(pdfs, tiny_model_path, tmp_path, *extra)[0] == 0
    loads.clear()
    code, output, report = _ingest(pdfs, tiny_model_path, tmp_path, *extra)
    assert code == 0 and "no model loaded" in output and "2 already done" in output
    assert not loads and report["models"] == [] and report["llm_calls"] == 0


@pytest.mark.parametrize("value", ["factz=some-model", "validate=", "validate"])
def test_bad_model_for_is_a_usage_error(value: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--model-for", value])
    assert result.exit_code == 2
    assert "--model-for" in result.output and "EXTRACTOR=MODEL" in result.output


def test_model_for_is_read_from_the_environment(tmp_path: Path) -> None:
    env = {"KG_ETL_MODEL_FOR": f"validate={tmp_path / 'judge.gguf'} factz=other"}
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path)], env=env)
    assert result.exit_code == 2 and "'factz=other'" in result.output
