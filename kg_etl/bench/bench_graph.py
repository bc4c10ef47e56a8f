"""Graph write throughput and entity resolution, on one deterministic synthetic extracted corpus.

Run: ``python -m kg_etl.bench.bench_graph [--chunks N]``; or ``run()`` for the figures (``kg-etl bench`` uses it).

A fresh local graph server (ArcadeDB over Bolt, in a temporary folder) receives the same graph three ways,
each into a freshly recreated database with the portable schema (cypher/schema.cypher) applied:

(a) ``GraphWriter.write_batch``, batches of 10 chunks, one transaction each (``UNWIND $rows ... MERGE``),
    including the row building and entity resolution it does;
(b) naive per-row code: one auto-commit ``MERGE`` per node and per relationship, of exactly the nodes and
    relationships that (a) wrote (read back from the graph);
(c) LangChain's ``Neo4jGraph.add_graph_documents`` (langchain-neo4j, optional) on the same nodes and
    relationships, in as many GraphDocuments as (a) had batches.

Items are nodes + relationships of the graph that (a) wrote; throughput is items per second of wall time.
The corpus: ``chunks`` chunks in documents of 20, each chunk with 6 facts with triples, 3 topic paths,
8 keywords, 3 categories, 1 summary and 3 validated QA pairs. Entity names come from a fixed list of real
things, written the way extraction writes them (case, articles, possessives, spacing, ligatures, acronyms),
so the resolution figures (surface forms before, entities after, the ideal) mean something.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import neo4j
from pydantic import SecretStr

from kg_etl.config import DEFAULT_CATEGORIES
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import EntityType, Fact, Facts, Triple
from kg_etl.extract.keywords import Keyword, Keywords
from kg_etl.extract.qa import QAPair, QAPairs
from kg_etl.extract.summary import Summary
from kg_etl.extract.taxonomy import Taxonomy, TopicNode, TopicPath
from kg_etl.extract.validate import Validation, Validations
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph, GraphSettings
from kg_etl.graph.resolve import entity_id, name_key
from kg_etl.graph.server import LocalGraphServer, ServerInfo
from kg_etl.graph.writer import DocStatus, GraphWriter, batch_rows
from kg_etl.models import Chunk, DocumentMeta, content_id

__all__ = ["main", "resolution_figures", "run", "synthetic_corpus"]

BATCH = 10
CHUNKS_PER_DOC = 20
MODEL = "bench"

# (canonical name, type, acronym or ""): real things, and two homonym pairs that must stay apart.
ENTITIES: list[tuple[str, EntityType, str]] = [
    ("World Health Organization", "organization", "WHO"),
    ("United Nations", "organization", "UN"),
    ("European Space Agency", "organization", "ESA"),
    ("National Aeronautics and Space Administration", "organization", "NASA"),
    ("Massachusetts Institute of Technology", "organization", "MIT"),
    ("International Business Machines", "organization", "IBM"),
    ("European Central Bank", "organization", "ECB"),
    ("Food and Agriculture Organization", "organization", "FAO"),
    ("The Beatles", "organization", ""),
    ("Jaguar", "organization", ""),
    ("Jaguar", "concept", ""),
    ("Mercury", "location", ""),
    ("Mercury", "concept", ""),
    ("Ada Lovelace", "person", ""),
    ("Charles Babbage", "person", ""),
    ("Marie Curie", "person", ""),
    ("Alan Turing", "person", ""),
    ("Grace Hopper", "person", ""),
    ("Rosalind Franklin", "person", ""),
    ("Albert Einstein", "person", ""),
    ("Geneva", "location", ""),
    ("New York", "location", ""),
    ("Paris", "location", ""),
    ("Amazon Rainforest", "location", ""),
    ("Artificial Intelligence", "concept", "AI"),
    ("Machine Learning", "concept", "ML"),
    ("Photosynthesis", "concept", ""),
    ("Climate Change", "concept", ""),
    ("Scientific Method", "concept", ""),
    ("Analytical Engine", "technology", ""),
    ("Large Hadron Collider", "technology", "LHC"),
    ("Theory of Relativity", "work", ""),
    ("Paris Agreement", "law", ""),
    ("General Data Protection Regulation", "law", "GDPR"),
    ("Second World War", "event", ""),
]
PREDICATES = [
    "founded",
    "works with",
    "is based in",
    "studied",
    "discovered",
    "funds",
    "is part of",
    "published",
    "regulates",
    "describes",
    "influenced",
    "located in",
]
TAXONOMY = {
    "Science": {"Physics": ["Particle Physics", "Relativity"], "Biology": ["Genetics", "Botany", "Cells"]},
    "Computing": {"History of Computing": ["Early Machines"], "Artificial Intelligence": ["Machine Learning"]},
    "Medicine": {"Public Health": ["Vaccination", "Epidemiology"]},
    "Society": {"Law": ["Data Protection", "Environmental Law"], "Economics": ["Central Banking"]},
}
KEYWORDS = [
    f"{a} {b}"
    for a in ("quantum", "cell", "data", "energy", "public", "neural", "carbon", "market")
    for b in ("model", "theory", "policy", "network", "cycle", "field", "rate", "system", "test")
]


def _variant(rng: random.Random, name: str, acronym: str) -> str:
    """One way extraction might write ``name``: mostly as is, often not."""
    roll = rng.random()
    if roll < 0.45:
        return name
    if roll < 0.55:
        return name.lower()
    if roll < 0.60:
        return name.upper()
    if roll < 0.68:
        return name if name.lower().startswith("the ") else f"the {name}"
    if roll < 0.74:
        return f"{name}'s" if rng.random() < 0.5 else f"{name}\u2019s"
    if roll < 0.80:
        return f" {name.replace(' ', '  ')} "
    if roll < 0.84:
        return name.replace("fi", "\ufb01")  # a PDF ligature: "Scientiﬁc"
    if acronym and roll < 0.97:
        return acronym
    return name


def synthetic_corpus(n_chunks: int = 200, seed: int = 7) -> list[tuple[DocumentMeta, list[ChunkExtraction]]]:
    """Documents of 20 chunks, each chunk with a full, deterministic set of extraction results."""
    rng = random.Random(seed)
    categories = categories_extractor(DEFAULT_CATEGORIES).schema
    paths = [[field, sub, leaf] for field, subs in TAXONOMY.items() for sub, leaves in subs.items() for leaf in leaves]
    docs = []
    for d in range(max(1, n_chunks // CHUNKS_PER_DOC)):
        meta = DocumentMeta(
            id=content_id("bench-doc", d),
            path=f"/bench/doc{d:03}.pdf",
            name=f"doc{d:03}.pdf",
            n_pages=CHUNKS_PER_DOC,
            title=f"Document {d}",
        )
        extractions = []
        for i in range(min(CHUNKS_PER_DOC, n_chunks - d * CHUNKS_PER_DOC)):
            text = f"Synthetic chunk {i} of document {d}. " + " ".join(rng.choice(KEYWORDS) for _ in range(40))
            chunk = Chunk(
                id=content_id(meta.id, i, text),
                doc_id=meta.id,
                index=i,
                text=text,
                page_start=i + 1,
                page_end=i + 1,
                char_start=i * 400,
                char_end=i * 400 + len(text),
                n_tokens=60,
            )
            facts: list[Fact] = []
            for _ in range(6):
                (s, st_, sa), (o, ot, oa) = rng.sample(ENTITIES, 2)
                subject, obj = _variant(rng, s, sa)[:60], _variant(rng, o, oa)[:60]
                predicate = rng.choice(PREDICATES)
                statement = f"{s} {predicate} {o} (chunk {d}.{i}, fact {len(facts)})."
                triple = Triple(subject=subject, subject_type=st_, predicate=predicate, object=obj, object_type=ot)
                facts.append(Fact(statement=statement[:160], triple=triple))
            topic_paths = [
                TopicPath(nodes=[TopicNode(name=n, importance=rng.randint(1, 5)) for n in p[: rng.randint(1, 3)]])
                for p in rng.sample(paths, 3)
            ]
            pairs = [
                QAPair(
                    question=f"What does fact {k} of chunk {d}.{i} say?",
                    answer=f"answer {k}",
                    evidence=f"evidence sentence {k} of chunk {d}.{i}",
                )
                for k in range(3)
            ]
            verdicts = [
                Validation(
                    verdict="valid",
                    score=0.8,
                    judgement="agrees",
                    model_answer=f"answer {k}",
                    evidence_found=True,
                    evidence_score=1.0,
                    answer_overlap=1.0,
                )
                for k in range(3)
            ]
            results = {
                "facts": Facts(facts=facts),
                "taxonomy": Taxonomy(paths=topic_paths),
                "keywords": Keywords(
                    keywords=[Keyword(term=t, relevance=round(rng.random(), 2)) for t in rng.sample(KEYWORDS, 8)]
                ),
                "categories": categories(labels=rng.sample(DEFAULT_CATEGORIES, 3)),
                "summary": Summary(summary=f"A summary of chunk {i} of document {d}."),
                "qa": QAPairs(pairs=pairs),
                "validate": Validations(items=list(verdicts)),
            }
            extractions.append(ChunkExtraction(chunk=chunk, results=results))
        docs.append((meta, extractions))
    return docs


# -- the server ----------------------------------------------------------------------------------------------


@contextmanager
def _server(heap_mb: int) -> Iterator[tuple[ServerInfo, str]]:
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-") as tmp:
        server = LocalGraphServer(Path(tmp), heap_mb=heap_mb)
        info = server.start()
        try:
            yield info, server.password()
        finally:
            server.stop()


def _recreate(info: ServerInfo, password: str) -> None:
    """Drop and create the database (ArcadeDB's HTTP API): no data, constraints or indexes left."""
    token = base64.b64encode(f"{info.username}:{password}".encode()).decode()
    for command in (f"drop database {info.database}", f"create database {info.database}"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{info.http_port}/api/v1/server",
            data=json.dumps({"command": command}).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()


def _fresh_graph(info: ServerInfo, password: str) -> Graph:
    _recreate(info, password)
    graph = Graph(
        GraphSettings(uri=info.uri, username=info.username, password=SecretStr(password), database=info.database)
    )
    graph.apply_schema()
    return graph


def _timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def _graph_counts(driver: neo4j.Driver, database: str) -> tuple[int, int]:
    nodes = driver.execute_query("MATCH (n) RETURN count(n) AS n", database_=database).records[0]["n"]
    rels = driver.execute_query("MATCH ()-[r]->() RETURN count(r) AS n", database_=database).records[0]["n"]
    return int(nodes), int(rels)


# -- (a) the writer ----------------------------------------------------------------------------------------------


def _write_with_writer(graph: Graph, corpus: list[tuple[DocumentMeta, list[ChunkExtraction]]]) -> int:
    writer = GraphWriter(graph)
    batches = 0
    for meta, extractions in corpus:
        writer.upsert_document(meta, DocStatus.PROCESSING)
        prev: str | None = None
        for start in range(0, len(extractions), BATCH):
            batch = extractions[start : start + BATCH]
            writer.write_batch(batch, prev, MODEL)
            prev = batch[-1].chunk.id
            batches += 1
        writer.upsert_document(meta, DocStatus.DONE, n_chunks=len(extractions))
    return batches


def _read_back(driver: neo4j.Driver, database: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every node and relationship, as plain rows: what the baselines write."""
    nodes = driver.execute_query(
        "MATCH (n) RETURN labels(n)[0] AS label, n.id AS id, properties(n) AS props", database_=database
    ).records
    rels = driver.execute_query(
        "MATCH (a)-[r]->(b) RETURN type(r) AS type, labels(a)[0] AS a_label, a.id AS a, labels(b)[0] AS b_label, "
        "b.id AS b, properties(r) AS props",
        database_=database,
    ).records
    return [r.data() for r in nodes], [r.data() for r in rels]


# -- (b) naive per-row code ------------------------------------------------------------------------------------


def _checked(name: str, allowed: tuple[str, ...]) -> str:
    # Labels and types are formatted into these baseline statements: only the model's own names pass.
    if name not in allowed:
        raise ValueError(f"{name!r} is not a label or type of the model")
    return name


def _write_per_row(
    driver: neo4j.Driver, database: str, nodes: list[dict[str, Any]], rels: list[dict[str, Any]]
) -> None:
    with driver.session(database=database) as session:
        for node in nodes:
            label = _checked(node["label"], st.LABELS)
            props = {k: v for k, v in node["props"].items() if k != "id"}
            session.run(f"MERGE (n:{label} {{id: $id}}) SET n += $props", id=node["id"], props=props).consume()
        for rel in rels:
            a, b = _checked(rel["a_label"], st.LABELS), _checked(rel["b_label"], st.LABELS)
            kind = _checked(rel["type"], st.RELATIONSHIP_TYPES)
            key = "{fact_id: $props.fact_id}" if "fact_id" in rel["props"] else ""
            session.run(
                f"MATCH (a:{a} {{id: $a}}) MATCH (b:{b} {{id: $b}}) MERGE (a)-[r:{kind} {key}]->(b) SET r += $props",
                a=rel["a"],
                b=rel["b"],
                props=rel["props"],
            ).consume()


# -- (c) LangChain ---------------------------------------------------------------------------------------------


def _write_langchain(
    info: ServerInfo,
    password: str,
    nodes: list[dict[str, Any]],
    rels: list[dict[str, Any]],
    groups: int,
    base_entity_label: bool = False,
) -> None:
    from langchain_core.documents import Document
    from langchain_neo4j import Neo4jGraph
    from langchain_neo4j.graphs.graph_document import GraphDocument, Node, Relationship

    def node(label: str, node_id: str, props: dict[str, Any] | None = None) -> Node:
        return Node(id=node_id, type=label, properties={k: v for k, v in (props or {}).items() if k != "id"})

    documents = []
    for g in range(groups):
        part_nodes = [node(n["label"], n["id"], n["props"]) for n in nodes[g::groups]]
        part_rels = [
            Relationship(
                source=node(r["a_label"], r["a"]),
                target=node(r["b_label"], r["b"]),
                type=r["type"],
                properties=r["props"],
            )
            for r in rels[g::groups]
        ]
        documents.append(GraphDocument(nodes=part_nodes, relationships=part_rels, source=Document(page_content="")))
    lc = Neo4jGraph(
        url=info.uri, username=info.username, password=password, database=info.database, refresh_schema=False
    )
    try:
        # Nodes first, everywhere, as (a) and (b) do: a relationship's ends then already carry their properties.
        lc.add_graph_documents(
            [GraphDocument(nodes=d.nodes, relationships=[], source=d.source) for d in documents],
            baseEntityLabel=base_entity_label,
        )
        lc.add_graph_documents(
            [GraphDocument(nodes=[], relationships=d.relationships, source=d.source) for d in documents],
            baseEntityLabel=base_entity_label,
        )
    finally:
        lc.close()


# -- entity resolution ---------------------------------------------------------------------------------------------


def resolution_figures(corpus: list[tuple[DocumentMeta, list[ChunkExtraction]]], samples: int = 8) -> dict[str, Any]:
    """Entities before (distinct surface form x type), after resolution, and the ideal (distinct real things)."""
    surfaces: set[tuple[str, str]] = set()
    resolved: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    for _, extractions in corpus:
        for start in range(0, len(extractions), BATCH):
            for statement, rows in batch_rows(extractions[start : start + BATCH], None, MODEL):
                if statement is st.WRITE_ENTITIES:
                    for row in rows:
                        surfaces.add((row["alias"], row["type"]))
                        resolved.setdefault(row["id"], set()).add(row["alias"])
                        names.setdefault(row["id"], f"{row['name']} ({row['type']})")
    ideal = {entity_id(name, kind): f"{name} ({kind})" for name, kind, _ in ENTITIES}
    mentioned_ideal = {i for i in ideal if i in resolved}
    leftovers = sorted(names[i] for i in resolved if i not in ideal)
    merged = sorted(resolved.items(), key=lambda item: (-len(item[1]), names[item[0]]))
    return {
        "surface_forms": len(surfaces),
        "entities": len(resolved),
        "ideal": len(mentioned_ideal),
        "unresolved": leftovers,  # e.g. an acronym in a batch that never spells the name out
        "homonyms_apart": all(entity_id("Jaguar", k) in resolved for k in ("organization", "concept")),
        "sample_merges": {names[i]: sorted(aliases) for i, aliases in merged[:samples]},
        "normalised_keys": len({(name_key(s), k) for s, k in surfaces}),
    }


# -- the run ----------------------------------------------------------------------------------------------------------


def run(
    n_chunks: int = 200,
    *,
    naive: bool = True,
    langchain: bool = True,
    rounds: int = 2,
    heap_mb: int = 1024,
    seed: int = 7,
) -> dict[str, Any]:
    """Write the synthetic corpus three ways against a fresh local server; return the figures.

    After a warm-up write (the JVM compiles as it goes), each way runs ``rounds`` times, in ABC then CBA order
    so that drift in machine load hits all alike; each way's time is its fastest round.
    """
    corpus = synthetic_corpus(n_chunks, seed)
    figures: dict[str, Any] = {"chunks": n_chunks, "batch": BATCH, "rounds": rounds}
    figures["resolution"] = resolution_figures(corpus)
    with (
        _server(heap_mb) as (info, password),
        neo4j.GraphDatabase.driver(info.uri, auth=(info.username, password)) as driver,
    ):
        with _fresh_graph(info, password) as graph:  # warm-up, and the graph the baselines copy
            batches = _write_with_writer(graph, corpus)
        node_count, rel_count = _graph_counts(driver, info.database)
        items = node_count + rel_count
        figures["graph"] = {"nodes": node_count, "relationships": rel_count, "batches": batches}
        nodes, rels = _read_back(driver, info.database)

        def writer() -> None:
            with _fresh_graph(info, password) as graph:
                _write_with_writer(graph, corpus)

        def per_row() -> None:
            _fresh_graph(info, password).close()
            _write_per_row(driver, info.database, nodes, rels)

        def lc() -> None:
            _fresh_graph(info, password).close()
            _write_langchain(info, password, nodes, rels, batches)

        ways: dict[str, Callable[[], None]] = {"writer": writer}
        if naive:
            ways["per_row"] = per_row
        if langchain:
            error = _langchain_missing()
            if error:
                figures["langchain"] = {"error": error}
            else:
                ways["lc"] = lc
        best: dict[str, float] = {}
        shapes: dict[str, tuple[int, int]] = {}
        errors: dict[str, str] = {}
        for r in range(rounds):
            for name in ways if r % 2 == 0 else reversed(ways):
                if name in errors:
                    continue
                try:
                    seconds, _ = _timed(ways[name])
                except Exception as e:  # a baseline that cannot run here: its error is the figure
                    errors[name] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
                    continue
                best[name] = min(seconds, best.get(name, seconds))
                shapes[name] = _graph_counts(driver, info.database)
        figures["writer"] = {
            "seconds": round(best["writer"], 2),
            "items_per_s": round(items / best["writer"]),
            "nodes": shapes["writer"][0],
            "relationships": shapes["writer"][1],
        }
        for name, key in (("per_row", "per_row"), ("lc", "langchain")):
            if name in errors:
                figures[key] = {"error": errors[name]}
            elif name in best:
                figures[key] = _baseline(best[name], items, shapes[name], figures)
        if "lc" in ways:
            figures["langchain"]["base_entity_label"] = _base_entity_label(info, password, nodes, rels)
    return figures


def _baseline(seconds: float, items: int, counts: tuple[int, int], figures: dict[str, Any]) -> dict[str, Any]:
    rate = items / seconds
    return {
        "seconds": round(seconds, 2),
        "items_per_s": round(rate),
        "writer_speedup": round(figures["writer"]["items_per_s"] / rate, 2),
        "nodes": counts[0],
        "relationships": counts[1],
    }


def _langchain_missing() -> str | None:
    try:
        import langchain_neo4j  # noqa: F401
    except ImportError as e:
        return f"not installed ({e}): pip install langchain-neo4j"
    return None


def _base_entity_label(info: ServerInfo, password: str, nodes: list[dict[str, Any]], rels: list[dict[str, Any]]) -> str:
    """LangChain's faster-import option (an extra __Entity__ label and constraint): does it run here?"""
    _fresh_graph(info, password).close()
    try:
        _write_langchain(info, password, nodes[:10], rels[:10], 1, base_entity_label=True)
    except Exception as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
    return "ok"


def _print(figures: dict[str, Any]) -> None:
    g = figures["graph"]
    print(
        f"synthetic corpus: {figures['chunks']} chunks -> {g['nodes']} nodes + {g['relationships']} relationships "
        f"= {g['nodes'] + g['relationships']} items, {g['batches']} batches of {figures['batch']} chunks"
    )
    for key, title in (
        ("writer", "(a) GraphWriter.write_batch"),
        ("per_row", "(b) per-row auto-commit MERGE"),
        ("langchain", "(c) langchain-neo4j add_graph_documents"),
    ):
        row = figures.get(key)
        if row is None:
            continue
        if "error" in row:
            print(f"{title:42} failed: {row['error']}")
        else:
            speedup = f"  (a)/this = {row['writer_speedup']}x" if "writer_speedup" in row else ""
            shape = f"  graph {row['nodes']}+{row['relationships']}" if "nodes" in row else ""
            print(f"{title:42} {row['seconds']:8.2f} s {row['items_per_s']:8} items/s{speedup}{shape}")
        if "base_entity_label" in row:
            print(f"{'':42} with baseEntityLabel=True: {row['base_entity_label']}")
    r = figures["resolution"]
    print(
        f"\nentity resolution: {r['surface_forms']} surface forms x types -> {r['normalised_keys']} after "
        f"normalising names -> {r['entities']} entities (ideal {r['ideal']}); homonyms kept apart: "
        f"{r['homonyms_apart']}"
    )
    print(f"left unresolved: {r['unresolved']}")
    for name, aliases in r["sample_merges"].items():
        print(f"  {name}: {aliases}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--no-naive", action="store_true", help="skip the per-row baseline (slow)")
    parser.add_argument("--no-langchain", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run(args.chunks, naive=not args.no_naive, langchain=not args.no_langchain, rounds=args.rounds)
    print(json.dumps(figures, indent=2, ensure_ascii=False) if args.json else "", end="")
    if not args.json:
        _print(figures)


if __name__ == "__main__":
    main()
