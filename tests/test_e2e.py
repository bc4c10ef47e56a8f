"""End to end through the CLI: a PDF with known text -> real llama.cpp (tiny model) -> live Bolt server -> JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import neo4j
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.samples import make_pdf

PAGES = [
    ["Photosynthesis converts light energy into chemical energy.", "Chlorophyll absorbs red and blue light."],
    ["The Calvin cycle fixes carbon dioxide into sugars.", "It runs in the stroma of the chloroplast."],
    ["Cellular respiration releases the energy stored in glucose.", "Mitochondria host the Krebs cycle."],
]


def _counts(driver: neo4j.Driver) -> dict[str, int]:
    records, _, _ = driver.execute_query(
        "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS n ORDER BY label"
    )
    nodes = {r["label"]: r["n"] for r in records}
    records, _, _ = driver.execute_query("MATCH ()-[r]->() RETURN type(r) AS t, count(*) AS n ORDER BY t")
    return nodes | {r["t"]: r["n"] for r in records}


def _ids(driver: neo4j.Driver) -> set[str]:
    records, _, _ = driver.execute_query("MATCH (n) RETURN n.id AS id")
    return {r["id"] for r in records}


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    return make_pdf(folder / "biology.pdf", PAGES, title="Energy in cells")


def _ingest(pdf: Path, model: Path, *extra: str) -> tuple[int, str]:
    args = [
        "ingest",
        str(pdf.parent),
        "--model",
        str(model),
        "--deterministic",
        "--batch",
        "2",
        "--chunk-tokens",
        "48",
        "--overlap-tokens",
        "8",
        "--quiet",
        *extra,
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, result.output


def test_ingest_writes_cited_graph_and_reingest_changes_nothing(
    pdf: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver, tmp_path: Path
) -> None:
    code, output = _ingest(pdf, tiny_model_path)
    assert code == 0, output
    counts = _counts(graph)
    assert counts["Document"] == 1
    assert counts["Chunk"] >= 3  # 48-token chunks over three pages of ~20 tokens each, chunked across pages
    assert counts["HAS_CHUNK"] == counts["Chunk"]
    assert counts["NEXT_CHUNK"] == counts["Chunk"] - 1
    assert counts.get("Fact", 0) + counts.get("Question", 0) == counts.get("FROM_CHUNK", 0)
    # Every extractor left its mark (the tiny model's text is random, but always fits the schemas), and
    # every knowledge node cites a chunk.
    for label in ("Topic", "Category", "Keyword", "Summary", "Question"):
        assert counts.get(label, 0) > 0, label
    assert counts["SUMMARIZES"] == counts["Summary"] == counts["Chunk"] + 1  # one per chunk + the document's
    records, _, _ = graph.execute_query(
        "MATCH (n) WHERE (n:Fact OR n:Question) AND NOT (n)-[:FROM_CHUNK]->(:Chunk) RETURN count(n) AS n"
    )
    assert records[0]["n"] == 0
    records, _, _ = graph.execute_query("MATCH (q:Question) RETURN q.verdict AS verdict, q.score AS score")
    assert all(r["verdict"] in {"valid", "invalid"} and 0 <= r["score"] <= 1 for r in records)

    records, _, _ = graph.execute_query(
        "MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk) RETURN d.status AS status, d.title AS title, "
        "c.text AS text, c.char_start AS start, c.char_end AS end, c.page_start AS p0, c.page_end AS p1"
    )
    assert {(r["status"], r["title"]) for r in records} == {("done", "Energy in cells")}
    # The chunks' offsets rebuild the document text; every line is in it, on its own page's chunks.
    doc_text = [" "] * max(r["end"] for r in records)
    for r in records:
        doc_text[r["start"] : r["end"]] = r["text"]
    rebuilt = "".join(doc_text)
    for number, lines in enumerate(PAGES, start=1):
        for line in lines:
            at = rebuilt.index(line)
            assert any(r["start"] <= at < r["end"] and r["p0"] <= number <= r["p1"] for r in records)

    before_counts, before_ids = _counts(graph), _ids(graph)
    code, output = _ingest(pdf, tiny_model_path)
    assert code == 0, output
    assert "0 LLM calls" in output and "1 already done" in output
    assert (_counts(graph), _ids(graph)) == (before_counts, before_ids)

    out = tmp_path / "facts.jsonl"
    result = CliRunner().invoke(cli, ["export", "--kind", "facts", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records_out = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records_out) == counts.get("Fact", 0)
    for record in records_out:
        assert record["doc_title"] == "Energy in cells"
        assert 1 <= record["page_start"] <= record["page_end"] <= 3


def test_unreadable_pdf_is_recorded_failed_and_others_finish(
    pdf: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    (pdf.parent / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    code, output = _ingest(pdf, tiny_model_path, "--extract", "facts")
    assert code == 1
    assert "broken.pdf" in output
    records, _, _ = graph.execute_query(
        "MATCH (d:Document) RETURN d.name AS name, d.status AS status, d.reason AS reason ORDER BY name"
    )
    assert [(r["name"], r["status"]) for r in records] == [("biology.pdf", "done"), ("broken.pdf", "failed")]
    assert records[1]["reason"]
