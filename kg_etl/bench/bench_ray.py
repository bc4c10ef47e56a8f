"""``kg-etl ingest --ray`` against one machine's ingest of the same folder, and the one writer's ceiling.

Run: ``python -m kg_etl.bench.bench_ray [--preset tiny] [--docs 4] [--actors 1 2] [--gpus-per-actor F]``; or
``run()`` for the figures. Needs the ``ray`` extra. Each configuration is a whole ``kg-etl ingest`` in a fresh
process, on a fresh database and an empty extraction cache, over the same folder, with the same model (a
random-weight LFM2 of the preset's shapes: speeds are real, replies are noise) and one llama.cpp thread per
model process:

- ``single``: one machine (one model worker);
- ``ray_N``: ``--ray local --ray-actors N`` (a Ray started and stopped by the run, N actors, one model each).

Figures: chunks per second of wall time (what a user waits for, Ray's start included) and of the pipeline
alone (the report's seconds: reading, extraction, writes), Ray's own cost (its start and stop, and its
overhead over one machine at one actor), each actor's generation speed and its model loads, and the most GPU
memory in use during the run (nvidia-smi, where there is one). Then the writes a single writer can absorb on
the local server (``bench_graph``'s batched writer, chunks and items per second): the ceiling that more actors
cannot raise. Configurations run in the order given, so ``--rounds 2`` runs them again in reverse order and
keeps each one's fastest: other processes share these cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kg_etl.bench import bench_graph
from kg_etl.samples import make_pdf
from kg_etl.testing import write_tiny_model

__all__ = ["main", "run"]

_LINE = "Section {i}: the river authority reviewed the {name} budget and the nitrate levels of {year}."
_NAMES = ("harbour", "forest", "school", "bridge", "clinic", "canal")


def _folder(path: Path, docs: int, pages: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for doc in range(docs):
        lines = [[_LINE.format(i=i, name=_NAMES[(doc + i) % len(_NAMES)], year=1990 + doc * 10 + p) for i in range(4)]
                 for p in range(pages)]  # fmt: skip
        make_pdf(path / f"report{doc}.pdf", lines, title=f"Report {doc}")
    return path


class _VramPeak:
    """The most GPU memory in use (MiB, all GPUs) while a run lasts, sampled with nvidia-smi; None without one."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _VramPeak:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        while not self._done.wait(0.5):
            out = subprocess.run(query, capture_output=True, text=True).stdout
            used = sum(float(v) for v in out.split() if v.replace(".", "", 1).isdigit())
            self.peak = max(self.peak or 0.0, used)


def _ingest(folder: Path, model: Path, env: dict[str, str], report: Path, extra: Sequence[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "kg_etl", "ingest", str(folder), "--model", str(model), "--quiet",
               "--deterministic", "--report", str(report), *extra]  # fmt: skip
    started = time.perf_counter()
    with _VramPeak() as vram:
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(extra)}: ingest failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(report.read_text())
    chunks = sum(d["chunks_written"] for d in data["documents"])
    figures = {
        "wall_seconds": round(wall, 2),
        "pipeline_seconds": round(data["seconds"], 2),
        "chunks": chunks,
        "llm_calls": data["llm_calls"],
        "chunks_per_s": round(chunks / wall, 3),
        "pipeline_chunks_per_s": round(chunks / data["seconds"], 3),
        "model_loads": sum(m["loads"] for m in data["models"]),
        "peak_vram_mib": vram.peak,
    }
    if "actors" in data:
        figures["actors"] = [
            {"tokens_per_s": round(a["tokens_per_s"] or 0, 1), "calls": a["calls"], "loads": a["loads"],
             "threads": a["threads"], "worker_peak_rss_mb": a["worker_peak_rss_mb"]}
            for a in data["actors"]
        ]  # fmt: skip
    return figures


def run(
    *,
    preset: str = "tiny",
    docs: int = 4,
    pages: int = 2,
    actors: Sequence[int] = (1, 2),
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    extract: str = "summary,keywords",
    chunk_tokens: int = 64,
    rounds: int = 1,
    writer_chunks: int = 200,
) -> dict[str, Any]:
    """Time one machine and ``--ray local`` with each number of ``actors``; return the figures."""
    figures: dict[str, Any] = {"preset": preset, "docs": docs, "pages": pages, "extract": extract,
                               "chunk_tokens": chunk_tokens, "cpu_count": os.cpu_count(),
                               "gpus_per_actor": gpus_per_actor}  # fmt: skip
    common = ["--extract", extract, "--chunk-tokens", str(chunk_tokens), "--overlap-tokens", "8"]
    configs: dict[str, list[str]] = {"single": common}
    for n in actors:
        layout = ["--ray-actors", str(n), "--ray-gpus-per-actor", str(gpus_per_actor), "--ray-cpus-per-actor",
                  str(cpus_per_actor)]  # fmt: skip
        configs[f"ray_{n}"] = [*common, "--ray", "local", *layout]
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-ray-") as tmp, bench_graph._server(1024) as (info, password):
        root = Path(tmp)
        model = write_tiny_model(root / f"lfm2-{preset}-random.gguf", preset=preset)
        folder = _folder(root / "pdfs", docs, pages)
        graph_env = {"NEO4J_URI": info.uri, "NEO4J_USERNAME": info.username, "NEO4J_PASSWORD": password,
                     "NEO4J_DATABASE": info.database, "KG_ETL_THREADS": "1"}  # fmt: skip
        best: dict[str, dict[str, Any]] = {}
        for r in range(rounds):
            for name in configs if r % 2 == 0 else reversed(configs):
                bench_graph._recreate(info, password)
                home = root / f"home-{name}-{r}"  # an empty cache: every reply is asked of a model
                env = os.environ | graph_env | {"KG_ETL_HOME": str(home)}
                result = _ingest(folder, model, env, root / f"{name}-{r}.json", configs[name])
                if name not in best or result["wall_seconds"] < best[name]["wall_seconds"]:
                    best[name] = result
    figures |= best
    single = best["single"]
    for n in actors:
        ray = best[f"ray_{n}"]
        ray["speedup_vs_single"] = round(ray["chunks_per_s"] / single["chunks_per_s"], 3)
        ray["pipeline_speedup_vs_single"] = round(ray["pipeline_chunks_per_s"] / single["pipeline_chunks_per_s"], 3)
        # What Ray adds to the wall time beyond the pipeline itself, over what one machine adds (imports,
        # the graph connection): starting and stopping Ray and its workers.
        extra = (ray["wall_seconds"] - ray["pipeline_seconds"]) - (single["wall_seconds"] - single["pipeline_seconds"])
        ray["ray_start_stop_seconds"] = round(extra, 2)
    figures["writer_ceiling"] = _writer_ceiling(writer_chunks)
    return figures


def _writer_ceiling(chunks: int) -> dict[str, Any]:
    """The one writer's batched writes on the local server: what a Ray run cannot go past, however many actors."""
    writer = bench_graph.run(chunks, naive=False, langchain=False, rounds=1)["writer"]
    return {
        "chunks": chunks,
        "chunks_per_s": round(chunks / writer["seconds"], 1),
        "items_per_s": writer["items_per_s"],
        "nodes": writer["nodes"],
        "relationships": writer["relationships"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="random-weight LFM2 shape (kg_etl.testing.PRESETS)")
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--pages", type=int, default=2)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus-per-actor", type=float, default=0.0)
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--extract", default="summary,keywords")
    parser.add_argument("--chunk-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = run(preset=args.preset, docs=args.docs, pages=args.pages, actors=args.actors,
                  gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor, extract=args.extract,
                  chunk_tokens=args.chunk_tokens, rounds=args.rounds)  # fmt: skip
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
