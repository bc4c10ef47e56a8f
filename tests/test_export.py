"""The export: QA datasets (schema, formats, filters, near-duplicates, stable order) and every other kind.

The graph is written by the real ``GraphWriter`` from hand-made extractions, so the export reads exactly what an
ingest leaves behind; the large-graph test writes plain ``UNWIND ... CREATE`` batches (kg_etl/bench/bench_export.py).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import neo4j
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from kg_etl.bench.bench_export import measure_in_fresh_process, write_synthetic
from kg_etl.cli import cli
from kg_etl.cli.app import EXIT_ERROR
from kg_etl.errors import ConfigError
from kg_etl.export import (
    FORMATS,
    KINDS,
    QA_SCHEMA_PATH,
    ExportReport,
    NearDuplicates,
    QAOptions,
    export,
    qa_schema,
    question_key,
)
from kg_etl.export_graph import GRAPH_FORMATS
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.facts import Fact, Facts, Triple
from kg_etl.extract.keywords import Keyword, Keywords
from kg_etl.extract.qa import QA, QAPair, QAPairs
from kg_etl.extract.summary import Summary
from kg_etl.extract.taxonomy import Taxonomy, TopicNode, TopicPath
from kg_etl.extract.validate import VALIDATE, Validation, Validations
from kg_etl.graph.connection import Graph
from kg_etl.graph.writer import DocStatus, GraphWriter
from kg_etl.models import Chunk, DocumentMeta, content_id
from tests.conftest import GraphConn

MODEL = "lfm2-test"
# (question, verdict, score) per chunk; the answer and evidence are derived from the question.
ALPHA = [
    [("What is ATP?", "valid", 0.9), ("Who discovered ATP in 1929?", "valid", 0.95)],
    [("what is atp ?", "invalid", 0.4), ("Where is ATP made in the cell?", "unvalidated", None)],
]
BETA = [
    [("What’s ATP?", "valid", 0.97), ("What is the capital of France?", "valid", 0.8)],
    [
        ("What is the capital of Spain?", "valid", 0.85),
        ("Who wrote Hamlet and Macbeth?", "valid", 0.7),
        ("Why did the stations exceed the limit?", "valid", 0.9),
    ],
    [("Who wrote Macbeth and Hamlet?", "valid", 0.6), ("Why did the three stations exceed the limit?", "invalid", 0.5)],
]
# The best of each near-duplicate group, and the questions that have none.
KEPT = {
    "What’s ATP?",
    "Who discovered ATP in 1929?",
    "Where is ATP made in the cell?",
    "What is the capital of France?",
    "What is the capital of Spain?",
    "Who wrote Hamlet and Macbeth?",
    "Why did the stations exceed the limit?",
}
ALL_QUESTIONS = {q for doc in (ALPHA, BETA) for chunk in doc for q, _, _ in chunk}


# ---------------------------------------------------------------- the graph


def _meta(name: str, n_pages: int, title: str) -> DocumentMeta:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return DocumentMeta(id=digest, path=f"/docs/{name}", name=name, n_pages=n_pages, title=title)


def _chunk(meta: DocumentMeta, index: int) -> Chunk:
    text = f"Text of chunk {index} of {meta.name}: enough words to quote from."
    return Chunk(
        id=content_id(meta.id, index, text),
        doc_id=meta.id,
        index=index,
        text=text,
        page_start=index + 1,
        page_end=index + 1,
        char_start=index * 100,
        char_end=index * 100 + len(text),
        n_tokens=12,
    )


def _validation(verdict: str, score: float) -> Validation:
    agrees = verdict == "valid"
    return Validation.model_validate(
        {
            "verdict": verdict,
            "score": score,
            "judgement": "agrees" if agrees else "disagrees",
            "model_answer": "the model's own answer",
            "evidence_found": agrees,
            "evidence_score": 1.0 if agrees else 0.5,
            "answer_overlap": 0.75,
        }
    )


def _qa_results(pairs: list[tuple[str, str, float | None]]) -> dict[str, BaseModel]:
    qa = QAPairs(
        pairs=[
            QAPair(question=q, answer=f"The answer to {q[:-1]}", evidence=f"A quoted sentence about {q[:-1]}.")
            for q, _, _ in pairs
        ]
    )
    checks = [None if score is None else _validation(verdict, score) for _, verdict, score in pairs]
    return {"qa": qa, "validate": Validations(items=checks)}


def _write_document(writer: GraphWriter, meta: DocumentMeta, extractions: list[ChunkExtraction]) -> None:
    writer.upsert_document(meta, DocStatus.PROCESSING)
    writer.write_batch(extractions, None, MODEL)
    writer.upsert_document(meta, DocStatus.DONE)


@pytest.fixture
def corpus(kg: Graph) -> dict[str, DocumentMeta]:
    """Two documents, beta written before alpha (the export orders by path, not by writing)."""
    writer = GraphWriter(kg)
    beta = _meta("beta.pdf", 3, "Beta")
    beta_chunks = [_chunk(beta, i) for i in range(3)]
    extractions = [
        ChunkExtraction(chunk=c, results=_qa_results(pairs)) for c, pairs in zip(beta_chunks, BETA, strict=True)
    ]
    extractions[1].results["facts"] = Facts(facts=[Fact(statement="Paris is the capital of France.", triple=None)])
    _write_document(writer, beta, extractions)

    alpha = _meta("alpha.pdf", 2, "Alpha")
    alpha_chunks = [_chunk(alpha, i) for i in range(2)]
    extractions = [
        ChunkExtraction(chunk=c, results=_qa_results(pairs)) for c, pairs in zip(alpha_chunks, ALPHA, strict=True)
    ]
    triple = Triple(subject="ATP", subject_type="concept", predicate="stores", object="energy", object_type="concept")
    extractions[0].results |= {
        "facts": Facts(facts=[Fact(statement="ATP stores energy in cells.", triple=triple)]),
        "taxonomy": Taxonomy(
            paths=[TopicPath(nodes=[TopicNode(name="Biology", importance=3), TopicNode(name="Cells", importance=5)])]
        ),
        "keywords": Keywords(keywords=[Keyword(term="energy", relevance=0.6), Keyword(term="ATP", relevance=0.9)]),
        "summary": Summary(summary="ATP carries energy inside cells."),
    }
    _write_document(writer, alpha, extractions)
    writer.write_document_summary(alpha.id, "A short text about ATP.")
    return {"alpha": alpha, "beta": beta}


def _export(
    kg: Graph, kind: str = "qa", documents: tuple[str, ...] = (), **options: Any
) -> tuple[list[dict[str, Any]], ExportReport]:
    out = io.StringIO()
    # Every pair unless a test asks for the filter: the library, like the command line, keeps valid ones by default.
    qa = QAOptions(**{"validated_only": False} | options) if kind == "qa" else None
    report = export(kg, out, kind, documents, qa)
    return [json.loads(line) for line in out.getvalue().split("\n") if line], report


# ---------------------------------------------------------------- QA records


def test_qa_records_round_trip_and_fit_the_schema(kg: Graph, corpus: dict[str, DocumentMeta]) -> None:
    records, report = _export(kg, dedup=False)
    validator = jsonschema.Draft202012Validator(qa_schema(), format_checker=jsonschema.FormatChecker())
    for record in records:
        validator.validate(record)
    assert {r["question"] for r in records} == ALL_QUESTIONS
    assert report.written == len(records) == len(ALL_QUESTIONS)

    alpha = corpus["alpha"]
    first = next(r for r in records if r["question"] == "Who discovered ATP in 1929?")
    assert first == {
        "id": content_id(_chunk(alpha, 0).id, "qa", "Who discovered ATP in 1929?"),
        "question": "Who discovered ATP in 1929?",
        "answer": "The answer to Who discovered ATP in 1929",
        "evidence": "A quoted sentence about Who discovered ATP in 1929.",
        "verdict": "valid",
        "score": 0.95,
        "judgement": "agrees",
        "model_answer": "the model's own answer",
        "evidence_found": True,
        "evidence_score": 1.0,
        "answer_overlap": 0.75,
        "model": MODEL,
        "judge_model": MODEL,
        "qa_version": QA.version,
        "validate_version": VALIDATE.version,
        "doc_sha256": alpha.id,
        "doc_path": "/docs/alpha.pdf",
        "doc_name": "alpha.pdf",
        "doc_title": "Alpha",
        "page_start": 1,
        "page_end": 1,
        "chunk_id": _chunk(alpha, 0).id,
        "chunk_index": 0,
    }
    unvalidated = next(r for r in records if r["verdict"] == "unvalidated")
    assert unvalidated["score"] is None and unvalidated["validate_version"] is None
    assert unvalidated["judge_model"] is None
    assert unvalidated["judgement"] is None and unvalidated["page_start"] == 2


def test_schema_rejects_what_it_should(kg: Graph, corpus: dict[str, DocumentMeta]) -> None:
    records, _ = _export(kg, dedup=False)
    validator = jsonschema.Draft202012Validator(qa_schema())
    record = records[0]
    for broken in (
        {k: v for k, v in record.items() if k != "doc_sha256"},
        record | {"extra": 1},
        record | {"verdict": "maybe"},
        record | {"score": 1.5},
        record | {"doc_sha256": "d1"},
    ):
        assert not validator.is_valid(broken), broken
    jsonschema.Draft202012Validator.check_schema(json.loads(QA_SCHEMA_PATH.read_text(encoding="utf-8")))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_fits_its_schema(kg: Graph, corpus: dict[str, DocumentMeta], fmt: str) -> None:
    records, _ = _export(kg, format=fmt, dedup=False)
    plain, _ = _export(kg, dedup=False)
    validator = jsonschema.Draft202012Validator(qa_schema(fmt))
    assert len(records) == len(plain) == len(ALL_QUESTIONS)
    for record, base in zip(records, plain, strict=True):
        validator.validate(record)
        metadata = {k: v for k, v in base.items() if k not in ("question", "answer")}
        if fmt == "plain":
            assert record == base
        elif fmt == "chat":
            assert record == {
                "messages": [
                    {"role": "system", "content": QAOptions().system},
                    {"role": "user", "content": base["question"]},
                    {"role": "assistant", "content": base["answer"]},
                ],
                "metadata": metadata,
            }
        elif fmt == "alpaca":
            assert record == {
                "instruction": base["question"],
                "input": "",
                "output": base["answer"],
                "metadata": metadata,
            }
        else:
            assert [turn["from"] for turn in record["conversations"]] == ["system", "human", "gpt"]
            assert [turn["value"] for turn in record["conversations"][1:]] == [base["question"], base["answer"]]
            assert record["metadata"] == metadata
    assert not validator.is_valid(plain[0] if fmt != "plain" else {"messages": []})


@pytest.mark.parametrize("fmt", ["chat", "sharegpt"])
def test_an_empty_system_prompt_leaves_out_the_system_turn(
    kg: Graph, corpus: dict[str, DocumentMeta], fmt: str
) -> None:
    records, _ = _export(kg, format=fmt, system="")
    validator = jsonschema.Draft202012Validator(qa_schema(fmt))
    for record in records:
        validator.validate(record)
        turns = record.get("messages") or record["conversations"]
        assert len(turns) == 2


# ---------------------------------------------------------------- filters


def test_validated_only_and_min_score(kg: Graph, corpus: dict[str, DocumentMeta]) -> None:
    valid, report = _export(kg, validated_only=True, dedup=False)
    assert {r["verdict"] for r in valid} == {"valid"}
    assert report.filtered_out == 3  # two invalid, one unvalidated
    assert len(valid) == len(ALL_QUESTIONS) - 3

    scored, report = _export(kg, min_score=0.9, dedup=False)
    assert sorted(r["score"] for r in scored) == [0.9, 0.9, 0.95, 0.97]  # unvalidated (no score) is out
    assert report.filtered_out == len(ALL_QUESTIONS) - 4


@pytest.mark.parametrize("ref", ["alpha.pdf", "/docs/alpha.pdf", "sha256"])
def test_document_filter_by_name_path_or_id(kg: Graph, corpus: dict[str, DocumentMeta], ref: str) -> None:
    alpha = corpus["alpha"]
    ref = alpha.id if ref == "sha256" else ref
    for kind in (k for k in KINDS if k != "schema"):  # this corpus has no user schema (see test_schema)
        records, _ = _export(kg, kind, documents=(ref,))
        assert records, kind
        assert {r["doc_sha256"] for r in records} == {alpha.id}, kind
    both, _ = _export(kg, documents=(ref, "beta.pdf"), dedup=False)
    assert len(both) == len(ALL_QUESTIONS)


def test_unknown_document_and_misplaced_options_are_config_errors(kg: Graph, corpus: dict[str, DocumentMeta]) -> None:
    with pytest.raises(ConfigError, match=r"nope\.pdf"):
        _export(kg, documents=("nope.pdf",))
    with pytest.raises(ConfigError, match="--kind qa"):
        export(kg, io.StringIO(), "facts", qa=QAOptions(validated_only=False))
    with pytest.raises(ConfigError, match="unknown export kind"):
        export(kg, io.StringIO(), "entities")


# ---------------------------------------------------------------- near-duplicates


def test_near_duplicates_are_removed_keeping_the_best(kg: Graph, corpus: dict[str, DocumentMeta]) -> None:
    records, report = _export(kg)
    assert {r["question"] for r in records} == KEPT
    assert report.duplicates_removed == len(ALL_QUESTIONS) - len(KEPT) == 4
    kept_atp = next(r for r in records if "ATP?" in r["question"])
    assert (kept_atp["doc_name"], kept_atp["score"]) == ("beta.pdf", 0.97)  # the best, though not the first

    # Filters come first: among valid pairs only, the invalid "three stations" is no duplicate to remove.
    valid, report = _export(kg, validated_only=True)
    assert {r["question"] for r in valid} == KEPT - {"Where is ATP made in the cell?"}
    assert report.duplicates_removed == 2

    everything, report = _export(kg, dedup=False)
    assert len(everything) == len(ALL_QUESTIONS) and report.duplicates_removed == 0


DUPLICATES = [
    ("What is X?", "what is x ?"),
    ("What is X?", "What's X?"),
    ("What is X?", "What’s X?"),
    ("What is X?", "WHAT IS X"),
    ("Who wrote Hamlet and Macbeth?", "Who wrote Macbeth and Hamlet?"),
    ("What causes nitrate levels to rise in July?", "What caused the nitrate level to rise in July?"),
    ("Isn't the river polluted?", "Is the river not polluted?"),
    ("Why did the stations exceed the limit?", "Why did the three stations exceed the limit?"),
    ("In what year was the treaty of Paris signed?", "What year was the Treaty of Paris signed in?"),
    ("What are the main studies of ATP synthase?", "What is the main study of the ATP synthase?"),
]
DISTINCT = [
    ("What is the capital of France?", "What is the capital of Spain?"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("Who founded the Acme company?", "When was the Acme company founded?"),
    ("What happened in 2010?", "What happened in 2020?"),
    ("Is the river polluted?", "Isn't the river polluted?"),
    (
        "What did the 2019 report by the river authority find about nitrate levels at the upstream stations?",
        "What did the 2019 report by the river authority find about nitrate levels at the downstream stations?",
    ),
    ("What is it?", "Why is it?"),
]


@pytest.mark.parametrize(("first", "second"), DUPLICATES)
def test_near_duplicate_pairs(first: str, second: str) -> None:
    groups = NearDuplicates()
    groups.add(first, 1.0)
    groups.add(second, 2.0)
    assert groups.dropped() == {0}, (question_key(first), question_key(second))


@pytest.mark.parametrize(("first", "second"), DISTINCT)
def test_distinct_pairs(first: str, second: str) -> None:
    groups = NearDuplicates()
    groups.add(first, 1.0)
    groups.add(second, 2.0)
    assert groups.dropped() == set(), (question_key(first), question_key(second))


def test_groups_keep_their_best_and_ties_go_to_the_first() -> None:
    groups = NearDuplicates()
    for question, rank in [("What is X?", 1.0), ("Who is Y?", 1.0), ("what is x", 3.0), ("What's X ?", 3.0)]:
        groups.add(question, rank)
    assert groups.dropped() == {0, 3}


def test_near_duplicates_far_apart_in_a_large_stream_are_found() -> None:
    """Bucket caps bound the work; a duplicate 10,000 questions later is still caught through its exact key."""
    groups = NearDuplicates()
    for i in range(10_000):
        groups.add(f"What is the value of parameter {i} in the model?", 0.5)
    groups.add("what is the VALUE of parameter 17 in the model ?", 0.1)
    groups.add("What is the value of parameter 23 in the large model?", 0.1)  # one word more: Jaccard 5/6
    assert groups.dropped() == {10_000, 10_001}


# ---------------------------------------------------------------- order


def test_order_is_stable_byte_for_byte_and_independent_of_page_size(
    kg: Graph, corpus: dict[str, DocumentMeta], tmp_path: Path
) -> None:
    outputs = []
    for page_size in (250, 250, 1):
        out = tmp_path / f"qa-{len(outputs)}.jsonl"
        with out.open("w", encoding="utf-8", newline="\n") as f:
            export(kg, f, "qa", qa=QAOptions(dedup=False), page_size=page_size)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    records = [json.loads(line) for line in outputs[0].decode().splitlines()]
    keys = [(r["doc_path"], r["chunk_index"], r["id"]) for r in records]
    assert keys == sorted(keys)
    assert keys[0][0] == "/docs/alpha.pdf"  # written last, exported first


# ---------------------------------------------------------------- the other kinds


def test_every_kind_exports_with_its_citation(kg: Graph, corpus: dict[str, DocumentMeta]) -> None:
    alpha, beta = corpus["alpha"], corpus["beta"]
    cite = {"doc_sha256": alpha.id, "doc_path": "/docs/alpha.pdf", "doc_name": "alpha.pdf", "doc_title": "Alpha"}
    chunk0 = {"page_start": 1, "page_end": 1, "chunk_id": _chunk(alpha, 0).id, "chunk_index": 0}

    facts, _ = _export(kg, "facts")
    assert [(f["text"], f["subject"], f["predicate"], f["object"], f["doc_name"]) for f in facts] == [
        ("ATP stores energy in cells.", "ATP", "stores", "energy", "alpha.pdf"),
        ("Paris is the capital of France.", None, None, None, "beta.pdf"),
    ]
    assert facts[0].items() >= (cite | chunk0 | {"model": MODEL}).items()
    assert facts[1]["doc_sha256"] == beta.id and facts[1]["chunk_index"] == 1 and facts[1]["page_start"] == 2

    topics, _ = _export(kg, "taxonomy")
    assert [(t["topic_path"], t["level"], t["importance"]) for t in topics] == [
        ("Biology", 1, 3),
        ("Biology > Cells", 2, 5),
    ]
    assert all(t.items() >= (cite | chunk0).items() for t in topics)

    keywords, _ = _export(kg, "keywords")
    assert [(k["keyword"], k["relevance"]) for k in keywords] == [("ATP", 0.9), ("energy", 0.6)]
    assert all(k.items() >= (cite | chunk0).items() for k in keywords)

    summaries, _ = _export(kg, "summaries")
    assert [(s["kind"], s["text"], s["chunk_id"], s["page_start"], s["page_end"]) for s in summaries] == [
        ("document", "A short text about ATP.", None, 1, 2),
        ("chunk", "ATP carries energy inside cells.", _chunk(alpha, 0).id, 1, 1),
    ]
    assert summaries[1]["model"] == MODEL
    assert all(s.items() >= cite.items() for s in summaries)


# ---------------------------------------------------------------- the command line


def test_cli_export_to_a_file_and_to_stdout(
    graph_env: GraphConn, kg: Graph, corpus: dict[str, DocumentMeta], tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "qa.jsonl"
    result = runner.invoke(cli, ["export", str(out), "--all"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "7 qa records written" in result.stderr
    assert "4 near-duplicate questions removed" in result.stderr
    assert list(tmp_path.iterdir()) == [out], "no temporary file is left beside it"
    assert {json.loads(line)["question"] for line in out.read_text(encoding="utf-8").splitlines()} == KEPT

    # By default, as the README says: the validated pairs only, and stderr says how many were left out.
    result = runner.invoke(cli, ["export", "-"], catch_exceptions=False)
    verdicts = {json.loads(line)["verdict"] for line in result.stdout.splitlines()}
    assert verdicts == {"valid"} and "not valid (--all writes them)" in result.stderr

    result = runner.invoke(cli, ["export", "-", "--format", "alpaca", "--validated-only", "--min-score", "0.9"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["instruction"] for r in lines} == {
        "What’s ATP?",
        "Who discovered ATP in 1929?",
        "Why did the stations exceed the limit?",
    }

    result = runner.invoke(cli, ["export", "-", "--kind", "facts", "--document", "beta.pdf"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["Paris is the capital of France."]

    result = runner.invoke(cli, ["export", "-", "--keep-duplicates", "--all"])
    assert len(result.stdout.splitlines()) == len(ALL_QUESTIONS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "facts", "--format", "chat"], "--kind qa"),
        (["--document", "nope.pdf"], "nope.pdf: no such document"),
    ],
)
def test_cli_export_errors_are_one_line_and_leave_no_file(
    graph_env: GraphConn, kg: Graph, corpus: dict[str, DocumentMeta], tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["export", str(out), *args])
    assert result.exit_code == EXIT_ERROR, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_export_to_a_missing_folder_is_a_one_line_error(
    graph_env: GraphConn, kg: Graph, corpus: dict[str, DocumentMeta], tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "missing" / "qa.jsonl")])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "missing does not exist" in result.stderr and "Traceback" not in result.output


def test_cli_choices_match_the_library() -> None:
    command = cli.commands["export"]
    choices = {p.name: list(getattr(p.type, "choices", [])) for p in command.params}
    assert choices["kind"] == list(KINDS)
    assert choices["fmt"] == [*FORMATS, *GRAPH_FORMATS]


# ---------------------------------------------------------------- a large graph, in flat memory

LARGE = 25_000


@pytest.mark.slow
def test_a_large_export_streams_in_flat_memory(
    graph: neo4j.Driver, graph_server: GraphConn, kg: Graph, tmp_path: Path
) -> None:
    """RSS is sampled in a fresh process per export (see measure_in_fresh_process), first without near-duplicate
    removal (pure streaming: flat), then with it (plus its per-question state, documented in NearDuplicates)."""
    written = write_synthetic(graph, graph_server.database, LARGE)
    out = tmp_path / "qa.jsonl"
    streaming = measure_in_fresh_process(kg.settings, out, QAOptions(dedup=False, validated_only=False))
    deduped = measure_in_fresh_process(kg.settings, out, QAOptions(validated_only=False))
    print(f"\n{LARGE} QA pairs, --keep-duplicates: {json.dumps(streaming)}")
    print(f"{LARGE} QA pairs, default: {json.dumps(deduped)}")
    assert streaming["written"] == LARGE and streaming["duplicates_removed"] == 0
    assert deduped["duplicates_removed"] == written["duplicates_planted"] > 0
    assert deduped["written"] + deduped["duplicates_removed"] == LARGE
    mb = 2**20
    # Streaming holds one page of rows: a few MB however large the graph (3.8 MB at 10k and at 40k pairs).
    assert streaming["rss_growth_mb"] * mb < streaming["bytes"] / 4, streaming
    # Near-duplicate removal adds ~130 bytes a question; allow 400 for allocator slack.
    assert (deduped["rss_growth_mb"] - streaming["rss_growth_mb"]) * mb < 400 * LARGE, deduped
    # Both together stay below the output (0.46 of it here, ~0.25 at 100k pairs: the fixed part matters less).
    assert deduped["rss_growth_mb"] * mb < deduped["bytes"] * 3 / 4, deduped
    validator = jsonschema.Draft202012Validator(qa_schema())
    with out.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 250 == 0:
                validator.validate(json.loads(line))
