"""How long `kg-etl view`'s page takes to lay out a graph in headless Chromium, against Cytoscape's own cose.

    python -m tests.bench_view_layout            # ~600, ~1,200 and ~2,400 shown nodes; cose up to ~1,200
    python -m tests.bench_view_layout --no-cose  # the page's own layout only

The graphs are synthetic but shaped like an ingest (documents, chunks collapsed into them, facts, questions,
summaries, entities with relations, keywords, a topic tree), built as the GraphView the page reads. The page's
own layout (d3-force, Barnes-Hut, in slices that keep the page responsive) is timed from the start of the
layout to the page saying it is ready; then cose (cytoscape.js's built-in force layout, default options) runs
on the same shown nodes in the same page. Printed: nodes shown, seconds each, and the ratio.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

from kg_etl.view.model import GraphView, Selection, ViewEdge, ViewNode
from kg_etl.view.render import render_html
from tests.chromium import Chromium

__all__ = ["main", "synthetic_view"]


def synthetic_view(documents: int, chunks: int, seed: int = 1) -> GraphView:
    """A GraphView shaped like an ingest of ``documents`` documents of ``chunks`` chunks each."""
    rng = random.Random(seed)
    nodes: list[ViewNode] = []
    edges: list[ViewEdge] = []

    def node(kind: str, ident: str, **props: object) -> str:
        nodes.append(ViewNode(key=f"{kind}:{ident}", kind=kind, id=ident, name=f"{kind} {ident}", props=dict(props)))
        return f"{kind}:{ident}"

    def edge(source: str, rel: str, target: str) -> None:
        edges.append(ViewEdge(source=source, target=target, type=rel, props={}))

    entities = [node("Entity", f"e{i}") for i in range(documents * chunks)]
    keywords = [node("Keyword", f"k{i}") for i in range(documents * chunks // 2)]
    roots = [node("Topic", f"t{i}", level=1) for i in range(5)]
    topics = roots + [node("Topic", f"t{i}", level=2) for i in range(5, 5 + documents * 5)]
    for child in topics[5:]:
        edge(child, "SUBTOPIC_OF", rng.choice(roots))
    for a in entities:
        if rng.random() < 0.4:
            edge(a, "RELATED", rng.choice(entities))
    for d in range(documents):
        doc = node("Document", f"d{d}")
        for c in range(chunks):
            chunk = node("Chunk", f"c{d}-{c}", doc_id=f"d{d}", index=c)
            edge(doc, "HAS_CHUNK", chunk)
            for f in range(3):
                fact = node("Fact", f"f{d}-{c}-{f}")
                edge(fact, "FROM_CHUNK", chunk)
                for entity in rng.sample(entities, 2):
                    edge(fact, "MENTIONS", entity)
                    edge(entity, "MENTIONED_IN", chunk)
            edge(node("Question", f"q{d}-{c}"), "FROM_CHUNK", chunk)
            edge(node("Summary", f"s{d}-{c}"), "SUMMARIZES", chunk)
            for keyword in rng.sample(keywords, 2):
                edge(chunk, "HAS_KEYWORD", keyword)
            for topic in rng.sample(topics, 2):
                edge(chunk, "HAS_TOPIC", topic)
    return GraphView(title="synthetic", selection=Selection(), nodes=nodes, edges=edges, citations={},
                     more_citations={}, texts={}, truncated=False)  # fmt: skip


def main() -> None:
    cose = "--no-cose" not in sys.argv
    sizes = [(3, 30, cose), (6, 30, cose), (12, 30, False)]  # documents, chunks each, run cose too
    with tempfile.TemporaryDirectory() as folder, Chromium() as browser:
        for documents, chunks, with_cose in sizes:
            path = Path(folder) / f"g{documents}.html"
            path.write_text(render_html(synthetic_view(documents, chunks)), encoding="utf-8")
            page = browser.page()
            page.goto(path.as_uri())
            page.wait_for("window.kgView && window.kgView.ready", timeout=600)
            shown = page.evaluate("kgView.shown().nodes")
            ours = page.evaluate("kgView.layoutMs") / 1000
            line = f"{shown} nodes shown: page layout (d3-force) {ours:.1f} s"
            if with_cose:
                cose = (
                    page.evaluate(
                        "(() => { const cy = kgView.cy, t = performance.now(), shown = cy.nodes(':visible');"
                        " shown.layout({name: 'cose', animate: false}).run(); return performance.now() - t; })()",
                        timeout=1800,
                    )
                    / 1000
                )
                line += f", cose {cose:.1f} s, cose / page = {cose / ours:.1f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
