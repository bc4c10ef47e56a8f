"""QA export of a large synthetic graph: time, peak RSS growth, and how both scale with the number of pairs.

Run: ``python -m kg_etl.bench.bench_export [-n 100000] [--format plain] [--keep-duplicates]``; or ``run()`` for
the figures. A local ArcadeDB Bolt server is started in a temporary folder (and stopped at the end), the
synthetic graph is written with plain ``UNWIND ... CREATE`` batches, then ``kg_etl.export.export`` writes the
JSONL file while a thread samples this process's RSS every 10 ms. The graph server runs in its own process, so
its memory is not counted.

The graph: documents of 500 chunks, three questions per chunk, every 20th question a reworded copy of an
earlier one from another chunk (lower case, spaced question mark), so near-duplicate removal has work to do and
its count can be checked: ``duplicates_planted``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import neo4j
import psutil
from pydantic import SecretStr

from kg_etl.export import QAOptions, export
from kg_etl.graph.connection import Graph, GraphSettings
from kg_etl.graph.server import LocalGraphServer
from kg_etl.models import content_id

__all__ = ["main", "measure_export", "measure_in_fresh_process", "run", "write_synthetic"]

CHUNKS_PER_DOC = 500
QUESTIONS_PER_CHUNK = 3
DUPLICATE_EVERY = 20
BATCH = 5000

_WRITE_DOCUMENTS = """
UNWIND $rows AS row
CREATE (:Document {id: row.id, path: row.path, name: row.name, title: row.title, n_pages: row.n_pages,
                   status: 'done'})
"""
_WRITE_CHUNKS = """
UNWIND $rows AS row
MATCH (d:Document {id: row.doc_id})
CREATE (d)-[:HAS_CHUNK]->(:Chunk {id: row.id, doc_id: row.doc_id, index: row.index, text: row.text,
                                  page_start: row.page, page_end: row.page, status: 'done'})
"""
_WRITE_QUESTIONS = """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
CREATE (q:Question)-[:FROM_CHUNK]->(c)
SET q = row
"""
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
_QUESTION_STARTS = ("What is", "Which", "How does", "Why did", "When was", "Who described", "Where is")


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _question(rng: random.Random, vocabulary: list[str]) -> str:
    words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 6)))
    return f"{rng.choice(_QUESTION_STARTS)} the {words}?"


def write_synthetic(driver: neo4j.Driver, database: str | None, n_questions: int, seed: int = 0) -> dict[str, int]:
    """Write ``n_questions`` QA pairs with their chunks and documents; returns what was written.

    The ids are content hashes like the pipeline's; document ids are 64-hex sha256 values, as real ones are.
    """
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    n_chunks = -(-n_questions // QUESTIONS_PER_CHUNK)
    n_docs = -(-n_chunks // CHUNKS_PER_DOC)
    docs: list[dict[str, Any]] = [
        {
            "id": hashlib.sha256(f"synthetic document {d}".encode()).hexdigest(),
            "path": f"/corpus/doc{d:05d}.pdf",
            "name": f"doc{d:05d}.pdf",
            "title": f"Synthetic document {d}",
            "n_pages": CHUNKS_PER_DOC // 2,
        }
        for d in range(n_docs)
    ]

    def write(text: str, rows: list[dict[str, Any]]) -> None:
        driver.execute_query(text, {"rows": rows}, database_=database)

    write(_WRITE_DOCUMENTS, docs)
    chunk_ids: list[str] = []
    for start in range(0, n_chunks, BATCH):
        rows = []
        for c in range(start, min(n_chunks, start + BATCH)):
            doc = docs[c // CHUNKS_PER_DOC]
            index = c % CHUNKS_PER_DOC
            text = f"Chunk {index} of {doc['name']}."
            rows.append(
                {"id": content_id(doc["id"], index, text), "doc_id": doc["id"], "index": index, "text": text}
                | {"page": index // 2 + 1}
            )
        write(_WRITE_CHUNKS, rows)
        chunk_ids += [r["id"] for r in rows]
    recent: list[str] = []
    planted = 0
    for start in range(0, n_questions, BATCH):
        rows = []
        for i in range(start, min(n_questions, start + BATCH)):
            if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and len(recent) > 10:
                question = recent[-10].lower().replace("?", " ?")
                planted += 1
            else:
                question = _question(rng, vocabulary)
            recent = [*recent[-20:], question]
            rows.append(_question_row(rng, question, chunk_ids[i // QUESTIONS_PER_CHUNK], i))
        write(_WRITE_QUESTIONS, rows)
    return {"documents": n_docs, "chunks": n_chunks, "questions": n_questions, "duplicates_planted": planted}


def _question_row(rng: random.Random, question: str, chunk_id: str, i: int) -> dict[str, Any]:
    score = round(rng.random(), 3)
    validated = i % 7 != 0
    verdict = ("valid" if score >= 0.5 else "invalid") if validated else "unvalidated"
    row: dict[str, Any] = {
        "id": content_id(chunk_id, "qa", question),
        "question": question,
        "answer": f"The answer to question {i}, as the chunk gives it.",
        "evidence": f"A sentence of the chunk that supports answer {i}, quoted word for word.",
        "verdict": verdict,
        "score": score if validated else None,
        "chunk_id": chunk_id,
        "model": "lfm2-1.2b-q4_k_m",
    }
    if validated:
        row |= {
            "judgement": "agrees" if verdict == "valid" else "disagrees",
            "model_answer": f"Answer {i}.",
            "evidence_found": True,
            "evidence_score": 1.0,
            "answer_overlap": 0.5,
        }
    return row


def measure_export(graph: Graph, out_path: Path, options: QAOptions | None = None) -> dict[str, Any]:
    """Export QA pairs to ``out_path`` while sampling RSS; returns time, RSS before/peak/growth and counts."""
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        with out_path.open("w", encoding="utf-8", newline="\n") as out:
            report = export(graph, out, "qa", qa=options)
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    size = out_path.stat().st_size
    return {
        "seconds": round(seconds, 2),
        "records_per_s": round(report.written / seconds) if seconds else None,
        "written": report.written,
        "duplicates_removed": report.duplicates_removed,
        "filtered_out": report.filtered_out,
        "bytes": size,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_growth_mb": round((peak - before) / 2**20, 1),
        "rss_growth_per_output_byte": round((peak - before) / size, 4) if size else None,
    }


def measure_in_fresh_process(
    settings: GraphSettings, out_path: Path, options: QAOptions | None = None
) -> dict[str, Any]:
    """``measure_export`` in a new interpreter; the connection travels in NEO4J_* variables, not in argv."""
    options = options or QAOptions()
    env = os.environ | {
        "NEO4J_URI": settings.uri,
        "NEO4J_USERNAME": settings.username,
        "NEO4J_PASSWORD": settings.password.get_secret_value(),
        "NEO4J_DATABASE": settings.database or "",
    }
    command = [sys.executable, "-m", "kg_etl.bench.bench_export", "--measure", str(out_path)]
    command += ["--format", options.format]
    command += [] if options.dedup else ["--keep-duplicates"]
    command += [] if options.validated_only else ["--all"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the export measurement failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def _measure_from_env(out_path: Path, options: QAOptions) -> dict[str, Any]:
    settings = GraphSettings(
        uri=os.environ["NEO4J_URI"],
        username=os.environ["NEO4J_USERNAME"],
        password=SecretStr(os.environ["NEO4J_PASSWORD"]),
        database=os.environ.get("NEO4J_DATABASE") or None,
    )
    with Graph(settings) as graph:
        graph.wait_ready()
        return measure_export(graph, out_path, options)


def run(n_questions: int = 100_000, options: QAOptions | None = None) -> dict[str, Any]:
    """Start a scratch graph server, write ``n_questions`` pairs, export them; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-export-") as tmp:
        server = LocalGraphServer(Path(tmp) / "graph")
        info = server.start()
        try:
            settings = GraphSettings(
                uri=info.uri, username=info.username, password=SecretStr(server.password()), database=info.database
            )
            with Graph(settings) as graph:
                graph.apply_schema()
                auth = (info.username, server.password())
                with neo4j.GraphDatabase.driver(info.uri, auth=auth) as driver:
                    started = time.perf_counter()
                    written = write_synthetic(driver, info.database, n_questions)
                    write_s = time.perf_counter() - started
            figures = measure_in_fresh_process(settings, Path(tmp) / "qa.jsonl", options)
        finally:
            server.stop()
    return written | {"write_s": round(write_s, 2)} | figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--questions", type=int, default=100_000)
    parser.add_argument("--format", default="plain", choices=["plain", "chat", "alpaca", "sharegpt"])
    parser.add_argument("--keep-duplicates", action="store_true")
    parser.add_argument("--all", action="store_true", help="every pair, not only the valid ones")
    parser.add_argument("--measure", type=Path, metavar="OUT", help="only export the graph in NEO4J_* to OUT")
    args = parser.parse_args()
    options = QAOptions(format=args.format, dedup=not args.keep_duplicates, validated_only=not args.all)
    if args.measure:
        print(json.dumps(_measure_from_env(args.measure, options)))
        return
    print(json.dumps(run(args.questions, options), indent=2))


if __name__ == "__main__":
    main()
