"""``kg-etl bench``: every performance figure of kg-etl in one run, each against a baseline measured in the
same run on the same machine, written as results.json, a markdown table and a PNG chart.

1. LLM stage: kg-etl (prefix-state reuse + parallel decoding) vs the naive design (a fresh chat completion per
   extractor per chunk, one sequence at a time), same chunks, same 1.2B-shaped random Q4_K_M model, the same
   fixed reply budget; and parallel vs sequential.
2. Graph writes: batched UNWIND/MERGE vs per-row MERGE (and langchain-neo4j where it can run).
3. Reading: reader + chunker pages/s vs a bare pypdf loop.
4. Memory: peak RSS of a whole ingest vs the model file size; the model is loaded once.
5. Re-ingest of an unchanged corpus: seconds vs the first ingest.
6. The model worker: its IPC vs the LLM work it carries, memory around a model switch, repacked vs plain CPU
   weights, and threads on idle and on busy cores (``bench_worker``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kg_etl.bench import CORPUS, bench_graph, bench_llm, bench_read, bench_worker
from kg_etl.llm.parallel import ParallelDecoder
from kg_etl.llm.runtime import LocalModel, Sampling
from kg_etl.registry import select_extractors
from kg_etl.testing import write_tiny_model

__all__ = ["GOALS", "markdown", "run"]


QUICK_READ = (
    "us_copyright_office_dmca_summary.pdf",
    "us_hr1904_healthy_forests_act.pdf",
    "va_esig_developer_guide.pdf",
    "metropolis_beamer_demo_slides.pdf",
)

# What each figure should reach (issue "Performance"): the table shows met / not met.
GOALS: dict[str, tuple[str, float]] = {
    "llm_speedup_vs_naive": (">=", 3.0),
    "parallel_speedup": (">=", 1.5),
    "write_speedup_vs_per_row": (">=", 10.0),
    "reader_overhead": ("<=", 0.15),
    "reingest_fraction": ("<", 0.05),
    "worker_ipc_overhead": ("<=", 0.02),
}


def run(out: Path, *, quick: bool = False, preset: str = "1.2b", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every benchmark; write ``out/results.json``, ``out/results.md`` and ``out/results.png``."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"quick": quick, "preset": preset, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-") as tmp:
        model_path = write_tiny_model(Path(tmp) / f"lfm2-{preset}-random.gguf", preset=preset)
        results["model_file_mb"] = round(model_path.stat().st_size / 2**20, 1)
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("llm", lambda: _llm(model_path, quick)),
            ("graph", lambda: _graph(quick)),
            ("reader", lambda: _reader(quick)),
            ("ingest", lambda: _ingest(model_path, Path(tmp), quick)),
            ("worker", lambda: _worker(model_path, quick)),
        ]
        for name, step in steps:
            log(f"running the {name} benchmark...")
            started = time.perf_counter()
            results.update(step())
            log(f"  {name}: {time.perf_counter() - started:.0f} s")
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True), encoding="utf-8")
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    _chart(results, out / "results.png")
    return results


def _llm(model_path: Path, quick: bool) -> dict[str, Any]:
    """Naive vs sequential-with-reuse vs parallel, on the same calls with the same budgets."""
    n_chunks, n_parallel = (2, 8) if quick else (4, 8)
    chunks = bench_llm.corpus_chunks(n_chunks)
    with LocalModel(model_path, n_ctx=8192, n_gpu_layers=-1, sampling=Sampling.deterministic()) as model:
        extractors = select_extractors(bench_llm.EXTRACTORS)
        calls = [bench_llm._calls(model, chunk, extractors, 32) for chunk in chunks]
        requests = [c.request for per_chunk in calls for c in per_chunk]
        model.generate(requests[:1])  # warm-up
        naive = _timed(lambda: [bench_llm._naive(model, per_chunk) for per_chunk in calls])
        sequential = _timed(lambda: model.generate(requests))
        with ParallelDecoder(model, n_parallel) as decoder:
            parallel = _timed(lambda: decoder.generate(requests))
    return {
        "llm_chunks": n_chunks,
        "llm_naive_chunks_per_s": round(n_chunks / naive, 3),
        "llm_sequential_chunks_per_s": round(n_chunks / sequential, 3),
        "llm_parallel_chunks_per_s": round(n_chunks / parallel, 3),
        "llm_parallel_n": n_parallel,
        "llm_speedup_vs_naive": round(naive / parallel, 2),
        "llm_reuse_speedup_vs_naive": round(naive / sequential, 2),
        "parallel_speedup": round(sequential / parallel, 2),
    }


def _worker(model_path: Path, quick: bool) -> dict[str, Any]:
    ipc = bench_worker.ipc(model_path, n_chunks=1)
    placement = bench_worker.placement(model_path, repeats=1 if quick else 3)
    figures: dict[str, Any] = {
        "worker_ipc_overhead": ipc["worker_ipc_overhead"],
        "worker_vs_in_process": ipc["worker_vs_in_process"],
        "worker_start_s": ipc["worker_start_s"],
        "placement_plain_prompt_ratio": placement["plain_prompt_ratio"],
        "placement_plain_gen_ratio": placement["plain_gen_ratio"],
        "worker": ipc,
        "placement": placement,
        "switch": bench_worker.switch(model_path),
        "parallel_memory": bench_worker.parallel_memory(model_path),
    }
    if not quick:
        figures["threads"] = bench_worker.threads(model_path)
    return figures


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _graph(quick: bool) -> dict[str, Any]:
    # Fastest of two rounds (ABC then CBA): a single round measures the JVM warming up as much as the writer.
    figures = bench_graph.run(50 if quick else 200, rounds=2, langchain=not quick)
    writer = figures["writer"]
    naive = figures.get("per_row") or figures.get("naive") or {}
    return {
        "write_items_per_s": writer.get("items_per_s"),
        "write_per_row_items_per_s": naive.get("items_per_s"),
        "write_speedup_vs_per_row": naive.get("writer_speedup"),
        "write_langchain": figures.get("langchain"),
    }


def _reader(quick: bool) -> dict[str, Any]:
    if not CORPUS.is_dir():
        return {"reader_overhead": None, "reader_note": f"{CORPUS} is absent"}
    if quick:  # four mid-sized files instead of all 912 pages
        with tempfile.TemporaryDirectory(prefix="kg-etl-bench-read-") as tmp:
            for name in QUICK_READ:
                (Path(tmp) / name).symlink_to(CORPUS / name)
            overall = bench_read.run(Path(tmp), rounds=1)["overall"]
    else:
        overall = bench_read.run(CORPUS, rounds=1)["overall"]
    return {
        "reader_overhead": round(overall["overhead_pct"] / 100, 3),
        "reader_pages_per_s": round(overall["ours_pages_per_s"], 1),
        "bare_pypdf_pages_per_s": round(overall["bare_pages_per_s"], 1),
    }


def _ingest(model_path: Path, tmp: Path, quick: bool) -> dict[str, Any]:
    """A whole ingest in a fresh process, twice: peak RSS vs the model file, and the re-ingest time."""
    from kg_etl.samples import make_pdf

    folder = tmp / "pdfs"
    folder.mkdir()
    lines = [f"Section {i}: the committee reviewed the budget of the river authority in {1990 + i}." for i in range(6)]
    for doc in range(1 if quick else 2):
        make_pdf(folder / f"report{doc}.pdf", [lines] * (2 if quick else 4), title=f"Report {doc}")
    env = os.environ | {"KG_ETL_HOME": str(tmp / "home")}
    # Every extractor, as `kg-etl ingest` runs by default: the first ingest is what a user waits for.
    args = [sys.executable, "-m", "kg_etl", "ingest", str(folder), "--model", str(model_path), "--quiet",
            "--deterministic"]  # fmt: skip
    first, report = _run_ingest(args, tmp / "first.json", env)
    second, again = _run_ingest(args, tmp / "second.json", env)
    return {
        "ingest_seconds": round(first, 2),
        "reingest_seconds": round(second, 2),
        "reingest_fraction": round(second / first, 4),
        "reingest_llm_calls": again["llm_calls"],
        "reingest_models_loaded": len(again["models"]),
        "peak_rss_mb": report["peak_rss_mb"],
        "ingest_llm_calls": report["llm_calls"],
        "ingest_chunks": sum(d["chunks_written"] for d in report["documents"]),
        # Evidence that one model was resident: each model's load count, and the most held at once.
        "ingest_model_loads": sum(m["loads"] for m in report["models"]),
        "ingest_max_resident_models": report["max_resident_models"],
    }


def _run_ingest(args: list[str], report: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    proc = subprocess.run([*args, "--report", str(report)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ingest failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, json.loads(report.read_text())


def markdown(results: dict[str, Any]) -> str:
    """The figures as a markdown table, with the goals."""
    rows = ["| figure | value | goal | met |", "|---|---|---|---|"]
    for key, value in sorted(results.items()):
        if isinstance(value, dict | list):
            continue
        goal = GOALS.get(key)
        met = ""
        if goal and isinstance(value, int | float):
            op, bound = goal
            met = "yes" if {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op] else "no"
        rows.append(f"| {key} | {value} | {' '.join(map(str, goal)) if goal else ''} | {met} |")
    return "\n".join(rows) + "\n"


def _chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["llm_speedup_vs_naive", "llm_reuse_speedup_vs_naive", "parallel_speedup", "write_speedup_vs_per_row"]
    values = [float(results.get(k) or 0) for k in keys]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar([k.replace("_", "\n") for k in keys], values, color="#4C78A8")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylabel("speed-up vs baseline (x)")
    ax.set_title(f"kg-etl benchmark ({results['preset']} random-weight model, {results['cpu_count']} CPUs)")
    ax.bar_label(bars, fmt="%.1fx")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
