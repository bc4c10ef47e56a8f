"""The LLM stage on a GPU: naive, prefix-state reuse (``LocalModel.generate``) and batched (``ParallelDecoder``).

Run on a machine with a CUDA build of llama-cpp-python:
``python -m kg_etl.bench.bench_gpu --preset 1.2b --chunks 20 [--sequential-chunks 10] [--naive-chunks 4]
[--parallel 32 16 8 4] [--chunks-json FILE]``;
a CPU smoke test: ``python -m kg_etl.bench.bench_gpu --preset tiny --chunks 4 --cpu``. A random-weight LFM2 of
the preset's real shapes (Q4_K_M, as the official GGUF files) is written to a temporary file (deleted at the
end): speeds and memory are real, replies are noise.

The workload is ``bench_llm.py``'s: each chunk (~450 tokens of real text from a corpus PDF) goes through every
chunk extractor (facts, taxonomy, categories, keywords, summary, qa) with its real prompt, split where the
shared prefix (system prompt + chunk) ends, and its real grammar; every reply is greedy and capped at the same
``max_tokens``. Designs:

- naive: each extractor's whole prompt from an empty context, one at a time (a fresh chat completion each);
- sequential: ``LocalModel.generate``: the prefix once per chunk, its state restored for each extractor;
- parallel_N: ``ParallelDecoder(model, N)``, as the pipeline builds it (``n_ctx_per_seq`` = the model's
  context unless ``--n-ctx-per-seq`` is given), fed one pipeline batch (``IngestSettings.batch_size``
  chunks) per ``generate`` call, as ``BatchExtractor.run`` does.

The naive and sequential designs may run on the first chunks only (their per-chunk cost is steady, and
they are the slow ones); replies are compared over the chunks both designs ran. Chunks come from
``--chunks-json`` (written by ``--write-chunks``, for machines without the corpus or pypdf) or straight from
the corpus PDF. Each design gets a warm-up call first (allocations, grammar parsing, CUDA graphs). Pages
per minute = chunks/s x pages per chunk of the source documents x 60. VRAM is read with ``nvidia-smi`` (the
whole GPU's use before and after loading, and the process's own). The JSON summary is printed and written to
``$OUT/gpu_results.json`` (``/tmp`` without ``$OUT``) after every design, so a run cut short still leaves what
it measured; ``--budget-s`` skips the designs that would start after that many seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kg_etl.bench import CORPUS
from kg_etl.config import DEFAULT_CATEGORIES, IngestSettings
from kg_etl.extract.base import Extractor, Job
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import FACTS
from kg_etl.extract.keywords import KEYWORDS
from kg_etl.extract.qa import QA
from kg_etl.extract.summary import SUMMARY
from kg_etl.extract.taxonomy import TAXONOMY
from kg_etl.llm.backend import LlamaBackend
from kg_etl.llm.grammar import llama_grammar
from kg_etl.llm.prompt import chunk_messages
from kg_etl.llm.runtime import (
    Completion,
    GenRequest,
    LocalModel,
    Sampling,
    gpu_memory_used_mb,
    gpu_offload_supported,
    peak_rss_mb,
    vram_used_mb,
)
from kg_etl.models import Chunk
from kg_etl.testing import write_tiny_model

__all__ = ["Source", "extractors", "load_chunks", "main", "run", "write_chunks"]

# English prose with few tables (bench_llm.py's document), then a second one for runs of more chunks.
PDFS = ("us_copyright_office_dmca_summary.pdf", "us_hr1904_healthy_forests_act.pdf")
CHUNK_TOKENS = 450


@dataclass(frozen=True)
class Source:
    """One chunk with where it came from: the document's name and its pages per chunk."""

    chunk: Chunk
    name: str
    pages_per_chunk: float


@dataclass(frozen=True)
class _Call:
    request: GenRequest
    extractor: Extractor


# -- chunks ------------------------------------------------------------------------------------------------


def write_chunks(path: Path, pdfs: Sequence[str] = PDFS) -> dict[str, Any]:
    """Chunk the corpus PDFs as the pipeline does and save the chunks with their documents' page counts."""
    from kg_etl.chunk import chunk_pages
    from kg_etl.read import open_pdf

    docs, chunks = [], []
    for name in pdfs:
        doc = open_pdf(CORPUS / name)
        pages = list(doc.pages())
        mine = list(chunk_pages(pages, doc.meta.id, max_tokens=CHUNK_TOKENS))
        docs.append({"name": name, "pages": len(pages), "chunks": len(mine)})
        chunks += [{"source": name, **c.model_dump()} for c in mine]
    data = {"chunk_tokens": CHUNK_TOKENS, "documents": docs, "chunks": chunks}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False))
    return data


def load_chunks(n: int, path: Path | None) -> list[Source]:
    """The first ``n`` chunks from ``path`` (``write_chunks``' file), or from the corpus PDFs."""
    if path is not None:
        data = json.loads(path.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="kg-etl-chunks-") as tmp:
            data = write_chunks(Path(tmp) / "chunks.json")
    ratio = {d["name"]: d["pages"] / d["chunks"] for d in data["documents"]}
    out = []
    for c in data["chunks"][:n]:
        name = c.pop("source")
        out.append(Source(Chunk(**c), name, ratio[name]))
    if len(out) < n:
        raise SystemExit(f"only {len(out)} chunks available, {n} asked for")
    return out


# -- the designs ---------------------------------------------------------------------------------------------


def extractors() -> list[Extractor]:
    """The chunk extractors in the registry's order (``registry.select_extractors`` without the graph imports)."""
    return [FACTS, TAXONOMY, categories_extractor(DEFAULT_CATEGORIES), KEYWORDS, SUMMARY, QA]


def _calls(backend: LlamaBackend, source: Source, chosen: Sequence[Extractor], max_tokens: int) -> list[_Call]:
    return [
        _Call(
            replace(
                backend.request(Job(tuple(chunk_messages(source.chunk, source.name, e.task)), e.schema)),
                max_tokens=max_tokens,
            ),
            e,
        )
        for e in chosen
    ]


def _naive(model: LocalModel, calls: Sequence[_Call]) -> list[Completion]:
    # complete() without a prefix resets the context and evaluates the whole prompt.
    return [
        model.complete(
            c.request.prefix + c.request.suffix,
            grammar=llama_grammar(c.extractor.schema),
            max_tokens=c.request.max_tokens,
        )
        for c in calls
    ]


def _batches(per_chunk: Sequence[Sequence[_Call]], batch_chunks: int) -> list[list[GenRequest]]:
    return [
        [c.request for calls in per_chunk[i : i + batch_chunks] for c in calls]
        for i in range(0, len(per_chunk), batch_chunks)
    ]


def _timed(
    model: LocalModel, work: Callable[[], list[Completion]], n_chunks: int, pages: float
) -> tuple[dict[str, Any], list[Completion]]:
    before = model.stats.prompt_tokens
    started = time.perf_counter()
    out = work()
    wall = time.perf_counter() - started
    prompt = model.stats.prompt_tokens - before
    generated = sum(c.completion_tokens for c in out)
    reasons: dict[str, int] = {}
    for c in out:
        reasons[c.finish_reason] = reasons.get(c.finish_reason, 0) + 1
    return {
        "chunks": n_chunks,
        "replies": len(out),
        "wall_s": round(wall, 3),
        "chunks_per_s": round(n_chunks / wall, 3),
        "pages_per_min": round(pages / wall * 60, 1),
        "generated_tokens": generated,
        "generated_tok_s": round(generated / wall, 1),
        "prompt_tokens_per_chunk": round(prompt / n_chunks, 1),
        "prompt_tok_s": round(prompt / wall, 1),
        "finish_reasons": reasons,
    }, out


def _gpu_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        return (
            subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def run(
    preset: str = "tiny",
    n_chunks: int = 4,
    *,
    cpu: bool = False,
    parallel: Sequence[int] = (4, 8, 16, 32),
    naive_chunks: int | None = None,
    sequential_chunks: int | None = None,
    max_tokens: int = 64,
    n_ctx: int = 8192,
    n_ctx_per_seq: int | None = None,
    batch_chunks: int | None = None,
    chunks_json: Path | None = None,
    budget_s: float | None = None,
    model_path: Path | None = None,
    report: Callable[[dict[str, Any]], None] = lambda _: None,
) -> dict[str, Any]:
    """Time the designs over the same chunks; ``report`` gets the summary after every design."""
    import llama_cpp

    try:
        from kg_etl.llm.parallel import ParallelDecoder
    except ImportError as e:  # the batched decoder is optional here: the other designs still run
        print(f"[bench_gpu] no ParallelDecoder ({e}); parallel designs skipped", file=sys.stderr)
        parallel = ()

    started = time.perf_counter()
    sources = load_chunks(n_chunks, chunks_json)
    naive_n = min(n_chunks, naive_chunks or n_chunks)
    seq_n = min(n_chunks, sequential_chunks or n_chunks)
    batch_chunks = batch_chunks or IngestSettings().batch_size
    chosen = extractors()
    summary: dict[str, Any] = {
        "preset": preset,
        "device": "cpu" if cpu else "gpu",
        "gpu": _gpu_name(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload_supported": gpu_offload_supported(),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "chunks": len(sources),
        "naive_chunks": naive_n,
        "sequential_chunks": seq_n,
        "batch_chunks": batch_chunks,
        "extractors": [e.name for e in chosen],
        "max_tokens": max_tokens,
        "n_ctx": n_ctx,
        "documents": sorted({s.name for s in sources}),
        "pages_per_chunk": round(sum(s.pages_per_chunk for s in sources) / len(sources), 4),
        "results": {},
        "skipped": [],
    }
    results: dict[str, Any] = summary["results"]
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-", dir="/tmp") as tmp:
        t = time.perf_counter()
        path = model_path or write_tiny_model(Path(tmp) / f"lfm2-{preset}-random.gguf", preset=preset)
        summary["model_write_s"] = round(time.perf_counter() - t, 2)
        summary["gguf_mb"] = round(path.stat().st_size / 2**20, 1)
        summary["vram_gpu_before_load_mb"] = gpu_memory_used_mb()
        t = time.perf_counter()
        with LocalModel(path, n_ctx=n_ctx, n_gpu_layers=0 if cpu else -1, sampling=Sampling.deterministic()) as model:
            summary["load_s"] = round(time.perf_counter() - t, 2)
            summary["offloaded"] = model.offloaded
            summary["vram_gpu_after_load_mb"] = gpu_memory_used_mb()
            summary["vram_process_after_load_mb"] = vram_used_mb()
            backend = LlamaBackend(model)
            per_chunk = [_calls(backend, s, chosen, max_tokens) for s in sources]
            summary["prefix_tokens_mean"] = round(
                sum(len(model.tokenize(c[0].request.prefix)) for c in per_chunk) / len(per_chunk), 1
            )
            summary["suffix_tokens_mean"] = round(
                sum(len(model.tokenize(x.request.suffix)) for c in per_chunk for x in c)
                / sum(len(c) for c in per_chunk),
                1,
            )
            pages = sum(s.pages_per_chunk for s in sources)
            naive_pages = sum(s.pages_per_chunk for s in sources[:naive_n])
            seq_pages = sum(s.pages_per_chunk for s in sources[:seq_n])

            def over_budget(name: str) -> bool:
                if budget_s is not None and time.perf_counter() - started > budget_s:
                    summary["skipped"].append(name)
                    report(summary)
                    return True
                return False

            # Warm-up: first-call allocations, grammar parsing, CUDA graph capture.
            model.generate([c.request for c in per_chunk[0]])
            replies: dict[str, list[str]] = {}

            batches = _batches(per_chunk, batch_chunks)
            if not over_budget("sequential"):
                seq_batches = _batches(per_chunk[:seq_n], batch_chunks)
                row, out = _timed(model, lambda: [c for b in seq_batches for c in model.generate(b)], seq_n, seq_pages)
                results["sequential"] = row
                replies["sequential"] = [c.text for c in out]
                report(summary)

            if naive_n and not over_budget("naive"):
                row, out = _timed(
                    model,
                    lambda: [c for calls in per_chunk[:naive_n] for c in _naive(model, calls)],
                    naive_n,
                    naive_pages,
                )
                results["naive"] = row
                if "sequential" in replies:
                    row["same_replies_as_sequential"] = _same(replies["sequential"], out)
                report(summary)

            for n in parallel:
                name = f"parallel_{n}"
                if over_budget(name):
                    continue
                try:
                    row = _parallel(model, ParallelDecoder, n, n_ctx_per_seq, per_chunk, batches, pages)
                except Exception as e:  # one configuration failing (out of memory...) must not lose the rest
                    results[name] = {"error": f"{type(e).__name__}: {e}"}
                    report(summary)
                    continue
                if "sequential" in replies:
                    row["same_replies_as_sequential"] = _same(replies["sequential"], row.pop("_out"))
                row.pop("_out", None)
                results[name] = row
                report(summary)

        summary["peak_rss_mb"] = peak_rss_mb()
    _ratios(summary)
    summary["total_s"] = round(time.perf_counter() - started, 1)
    report(summary)
    return summary


def _parallel(
    model: LocalModel,
    decoder_type: Any,
    n: int,
    n_ctx_per_seq: int | None,
    per_chunk: Sequence[Sequence[_Call]],
    batches: Sequence[Sequence[GenRequest]],
    pages: float,
) -> dict[str, Any]:
    """One ``ParallelDecoder`` configuration: created, warmed up on one chunk, then timed on every batch."""
    t = time.perf_counter()
    gpu_before = gpu_memory_used_mb()
    with decoder_type(model, n, n_ctx_per_seq=n_ctx_per_seq) as decoder:
        create_s = time.perf_counter() - t
        vram_ctx = gpu_memory_used_mb()
        decoder.generate([c.request for c in per_chunk[0]])  # warm-up
        row, out = _timed(model, lambda: [c for b in batches for c in decoder.generate(b)], len(per_chunk), pages)
        row["n_ctx_per_seq"] = decoder.n_ctx_per_seq
    row["context_create_s"] = round(create_s, 2)
    if gpu_before is not None and vram_ctx is not None:
        row["context_vram_mb"] = round(vram_ctx - gpu_before, 1)
    row["_out"] = [c.text for c in out]
    return row


def _same(reference: Sequence[str], out: Sequence[Completion] | Sequence[str]) -> str:
    """How many replies equal the reference's, over the chunks both designs ran (the first ones)."""
    texts = [c if isinstance(c, str) else c.text for c in out]
    n = min(len(reference), len(texts))
    return f"{sum(a == b for a, b in zip(reference[:n], texts[:n], strict=True))}/{n}"


def _ratios(summary: dict[str, Any]) -> None:
    results = {name: row for name, row in summary["results"].items() if "chunks_per_s" in row}  # not failed ones
    naive, seq = results.get("naive"), results.get("sequential")
    for name, row in results.items():
        if naive and name != "naive":
            row["speedup_vs_naive"] = round(row["chunks_per_s"] / naive["chunks_per_s"], 2)
        if seq and name.startswith("parallel_"):
            row["speedup_vs_sequential"] = round(row["chunks_per_s"] / seq["chunks_per_s"], 2)
    if naive and seq:
        summary["prompt_tokens_ratio_naive_vs_sequential"] = round(
            naive["prompt_tokens_per_chunk"] / seq["prompt_tokens_per_chunk"], 2
        )
    best = max(
        (r for n, r in results.items() if n.startswith("parallel_")), key=lambda r: r["chunks_per_s"], default=None
    )
    if best is not None:
        summary["best_parallel"] = next(n for n, r in results.items() if r is best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--preset", default="1.2b", help="kg_etl.testing.PRESETS key (tiny, 350m, 1.2b, 2.6b...)")
    parser.add_argument("-n", "--chunks", type=int, default=30)
    parser.add_argument("--naive-chunks", type=int, default=None, help="chunks for the naive design (default all)")
    parser.add_argument("--sequential-chunks", type=int, default=None, help="chunks for sequential (default all)")
    parser.add_argument("--parallel", type=int, nargs="*", default=[4, 8, 16, 32], help="n_parallel values")
    parser.add_argument("--max-tokens", type=int, default=64, help="reply budget of every extractor")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--n-ctx-per-seq", type=int, default=None, help="ParallelDecoder context per sequence")
    parser.add_argument("--batch-chunks", type=int, default=None, help="chunks per generate call (pipeline's)")
    parser.add_argument("--chunks-json", type=Path, default=None, help="chunks written by --write-chunks")
    parser.add_argument("--write-chunks", type=Path, default=None, help="write the corpus chunks here and exit")
    parser.add_argument("--budget-s", type=float, default=None, help="skip designs starting after this many s")
    parser.add_argument("--cpu", action="store_true", help="no offload (smoke test)")
    parser.add_argument("--model", type=Path, default=None, help="a GGUF instead of a random one")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")) / "gpu_results.json")
    args = parser.parse_args()
    if args.write_chunks:
        data = write_chunks(args.write_chunks)
        print(json.dumps(data["documents"]))
        return

    def report(summary: dict[str, Any]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        done = list(summary["results"])
        print(f"[bench_gpu] {time.strftime('%H:%M:%S')} done: {done}", file=sys.stderr, flush=True)
        if done:
            print(f"[bench_gpu] {done[-1]}: {json.dumps(summary['results'][done[-1]])}", file=sys.stderr, flush=True)

    summary = run(
        args.preset,
        args.chunks,
        cpu=args.cpu,
        parallel=args.parallel,
        naive_chunks=args.naive_chunks,
        sequential_chunks=args.sequential_chunks,
        max_tokens=args.max_tokens,
        n_ctx=args.n_ctx,
        n_ctx_per_seq=args.n_ctx_per_seq,
        batch_chunks=args.batch_chunks,
        chunks_json=args.chunks_json,
        budget_s=args.budget_s,
        model_path=args.model,
        report=report,
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
