"""The real-model tier: real small instruct models, whose replies nobody scripted, through the whole product.

SmolLM2-135M-Instruct (llama architecture, ChatML) runs ``kg-etl ingest`` through the CLI into the real
Bolt server and the WebNLG evaluation; Gemma 3 270M (a base model whose GGUF carries no chat template,
and whose format has no system role) runs every extractor, the validation pass and the gold-set evaluation.
What is asserted is what users rely on whatever a model says: every extractor gives a schema-valid result
or a recorded failure, nothing crashes or hangs, a re-ingest makes no LLM call. How good the output is,
is measured by ``kg-etl eval`` (README, "Quality"), not asserted here: these models are weak.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import neo4j
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.config import IngestSettings
from kg_etl.eval.gold import default_gold_dir, load_gold
from kg_etl.eval.session import EvalItem, EvalModel
from kg_etl.extract.qa import QAPairs
from kg_etl.extract.schema import load_schema
from kg_etl.extract.validate import Validations
from kg_etl.pipeline import run_extractors
from kg_etl.registry import select_extractors
from kg_etl.samples import make_pdf

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CHUNK_EXTRACTORS = ("facts", "taxonomy", "categories", "keywords", "summary", "qa")


def _gold_text(name: str) -> str:
    return next(doc.text for doc in load_gold(default_gold_dir()) if doc.id == name)


def _ingest(folder: Path, model: Path, report: Path) -> tuple[int, str]:
    args = ["ingest", str(folder), "--model", str(model), "--deterministic", "--quiet", "--report", str(report)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.output


def test_smollm2_ingests_a_real_text_and_reingest_makes_no_llm_call(
    smollm2_path: Path, graph_env: object, graph: neo4j.Driver, tmp_path: Path
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    sentences = _gold_text("09-great-barrier-reef").split(". ")
    make_pdf(folder / "reef.pdf", [sentences[:3], sentences[3:]], title="The Great Barrier Reef")

    code, output = _ingest(folder, smollm2_path, tmp_path / "first.json")
    assert code in (0, 1), output  # 1: some extraction failed, and the report records it
    doc = json.loads((tmp_path / "first.json").read_text())["documents"][0]
    assert doc["status"] == "done", doc
    failed = {failure["extractor"] for failure in doc["failures"]}
    for name in CHUNK_EXTRACTORS:
        assert name in doc["extractions"] or name in failed, name
    assert all(failure["error"] and failure["attempts"] >= 1 for failure in doc["failures"])
    records, _, _ = graph.execute_query(
        "MATCH (:Document)-[:HAS_CHUNK]->(c:Chunk) RETURN count(c) AS n, min(c.page_start) AS first"
    )
    assert records[0]["n"] == doc["chunks"] >= 1 and records[0]["first"] == 1

    code, output = _ingest(folder, smollm2_path, tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["llm_calls"] == 0 and again["documents"][0]["status"] == "skipped", output


def test_smollm2_webnlg_eval_writes_candidates_the_official_script_reads(
    smollm2_path: Path, tmp_path: Path, webnlg_sample: Path
) -> None:
    args = ["eval", "webnlg", str(webnlg_sample), "--model", str(smollm2_path), "--limit", "3", "--json", "-q"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["entries"] == 3 and set(summary["scores"]) >= {"strict", "exact", "partial", "type"}
    for scores in summary["scores"].values():
        assert all(0.0 <= scores[key] <= 1.0 for key in ("precision", "recall", "f1"))
    entries = ET.parse(tmp_path / "out" / "candidates.xml").getroot().findall("entries/entry")
    assert len(entries) == 3
    for entry in entries:
        for triple in entry.iter("gtriple"):
            assert (triple.text or "").count(" | ") == 2


def test_gemma_runs_every_extractor_and_the_validation_pass(gemma_path: Path) -> None:
    """A base model without a chat template: every extractor on the batched decoder, and the sequential one."""
    items = [EvalItem(id="17-suez-canal", text=_gold_text("17-suez-canal"))]
    for parallel, names in ((2, CHUNK_EXTRACTORS), (1, ("facts", "qa"))):
        extractors = select_extractors([*names, "validate"])
        settings = IngestSettings(
            model=str(gemma_path),
            deterministic=True,
            parallel=parallel,
            download=False,
            extractors=(*names, "validate"),
        )
        with EvalModel(settings) as model:
            [out] = model.extract(items, extractors)
        failed = {failure.extractor for failure in out.failures}
        for name in names:
            assert name in out.results or name in failed, (parallel, name)
        pairs = out.results.get("qa")
        if isinstance(pairs, QAPairs):
            validations = out.results["validate"]
            assert isinstance(validations, Validations) and len(validations.items) == len(pairs.pairs)
        assert {key for counts in model.outcomes.values() for key in counts} <= {"first_try", "after_retries", "failed"}


PAPER = [
    ["Deep Nets for Cats was written by Alice Smith and Bob Jones at the University of Leeds in 2021."],
    ["The paper proposes CatNet, a convolutional network trained on ImageNet.",
     "CatNet reached an accuracy of 91.2 percent on ImageNet."],
]  # fmt: skip


def test_smollm2_ingests_with_the_papers_schema_into_declared_types_only(
    smollm2_path: Path, graph_env: object, graph: neo4j.Driver, tmp_path: Path
) -> None:
    """The user's schema on a real model: a valid reply or a recorded failure, and nothing undeclared."""
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "cats.pdf", PAPER, title="Deep Nets for Cats")
    args = ["ingest", str(folder), "--model", str(smollm2_path), "--schema", "papers", "--extract", "schema"]
    args += ["--deterministic", "--quiet", "--chunk-tokens", "64", "--overlap-tokens", "0"]
    first = CliRunner().invoke(cli, [*args, "--report", str(tmp_path / "first.json")], catch_exceptions=False)
    assert first.exit_code in (0, 1), first.output
    doc = json.loads((tmp_path / "first.json").read_text())["documents"][0]
    assert doc["status"] == "done" and doc["chunks"] >= 1
    assert doc["extractions"].get("schema", 0) + len(doc["failures"]) >= doc["chunks"]
    schema = load_schema("papers")
    labels = {r["label"] for r in graph.execute_query("MATCH (n:SchemaNode) UNWIND labels(n) AS label "
                                                       "RETURN DISTINCT label").records}  # fmt: skip
    types = {r["type"] for r in graph.execute_query("MATCH (:SchemaNode)-[r]->(:SchemaNode) "
                                                     "RETURN DISTINCT type(r) AS type").records}  # fmt: skip
    assert labels <= {"SchemaNode", *schema.labels()} and types <= set(schema.relationship_types())
    again = CliRunner().invoke(cli, [*args, "--report", str(tmp_path / "again.json")], catch_exceptions=False)
    assert json.loads((tmp_path / "again.json").read_text())["llm_calls"] == 0, again.output


def test_gemma_extracts_with_the_contracts_schema(gemma_path: Path) -> None:
    text = (
        "Acme Ltd shall deliver 500 chairs to Birch Hotels by 1 March 2027. Birch Hotels shall pay Acme Ltd "
        "EUR 40,000 within 30 days of delivery."
    )
    settings = IngestSettings(
        model=str(gemma_path), deterministic=True, download=False, extractors=("schema",), user_schema="contracts"
    )
    with EvalModel(settings) as model:
        [out] = model.extract([EvalItem(id="contract", text=text)], run_extractors(settings))
    schema = load_schema("contracts")
    result = out.results.get("schema")
    assert result is not None or [f.extractor for f in out.failures] == ["schema"]
    if result is not None:
        reply = result.model_dump()
        assert {node["type"] for node in reply["nodes"]} <= set(schema.labels())
        assert {rel["type"] for rel in reply.get("relationships", [])} <= set(schema.relationship_types())
