"""The model worker and the CPU choices behind it, each measured against its alternative in the same run.

1. IPC: the same extraction requests in this process (``LocalModel`` + ``ParallelDecoder``) and through a
   ``ModelWorker`` (another process, replies streamed back over a socket): the worker's overhead.
2. Placement: prompt and generation tokens/s with llama.cpp's repacked CPU weights (extra buffer types)
   and with plain buffers, the safe placement that ``--cpu-repack auto`` falls back to where llama.cpp
   crashes (its AMX kernels on Intel Xeons).
3. Threads: generation tokens/s with 1 and with every core, on idle cores and with one other busy process.
4. A model switch: this process's memory (and the GPU's) before a worker starts, while it holds the model,
   and after it is closed.
5. Memory of --parallel: a worker's peak RSS with 1 sequence, with 8 sequences each sized to what a request
   can need (as ingest sizes them), and with 8 sequences of the whole --n-ctx (as kg-etl did before).

Each placement and thread setting runs in a fresh child process (llama.cpp reads its thread settings once).
Run alone: ``python -m kg_etl.bench.bench_worker --preset 1.2b``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kg_etl.bench import bench_llm
from kg_etl.defaults import N_CTX
from kg_etl.extract.base import Job
from kg_etl.llm.backend import chat_request
from kg_etl.llm.parallel import ParallelDecoder
from kg_etl.llm.prompt import chunk_messages
from kg_etl.llm.protocol import ChatRequest, WorkerSpec, gen_request
from kg_etl.llm.runtime import Completion, LocalModel, Sampling, current_rss_mb, gpu_memory_used_mb
from kg_etl.llm.worker import ModelWorker
from kg_etl.registry import select_extractors
from kg_etl.testing import write_tiny_model

__all__ = ["ipc", "main", "parallel_memory", "placement", "switch", "threads"]

_PROMPT = " ".join(["The river authority met in May and approved the flood budget for the valley."] * 24)


def _requests(n_chunks: int, max_tokens: int) -> list[ChatRequest]:
    extractors = select_extractors(bench_llm.EXTRACTORS)
    return [
        ChatRequest(r.messages, r.grammar, max_tokens)
        for chunk in bench_llm.corpus_chunks(n_chunks)
        for r in (chat_request(Job(tuple(chunk_messages(chunk, bench_llm.PDF, e.task)), e.schema)) for e in extractors)
    ]


def ipc(
    path: Path, *, n_chunks: int = 1, parallel: int = 8, threads: int | None = None, repeats: int = 1
) -> dict[str, Any]:
    """The same rounds in this process and in a worker: seconds (best of ``repeats``) and the overhead."""
    threads = threads or os.cpu_count() or 1
    requests = _requests(n_chunks, max_tokens=32)
    spec = WorkerSpec(str(path), 4096, 0, False, threads, Sampling.deterministic(), parallel, 4096, True)
    with (
        LocalModel(
            path, n_ctx=512, n_gpu_layers=0, n_threads=threads, sampling=spec.sampling, cpu_repack="on"
        ) as model,
        ParallelDecoder(model, parallel, n_ctx_per_seq=4096) as decoder,
    ):
        local = _best(lambda: decoder.generate([gen_request(model, r) for r in requests]), repeats)
    with ModelWorker(spec) as worker:
        remote = _best(lambda: worker.generate(requests), repeats)
        overhead = worker.ipc_overhead
    same = sum(a.text == b.text for a, b in zip(local[1], remote[1], strict=True))
    return {
        "requests": len(requests),
        "in_process_s": round(local[0], 3),
        "worker_s": round(remote[0], 3),
        # Timed inside the worker and around it in the same calls: exact, where the two runs' difference
        # (worker_vs_in_process) also carries the machine's noise.
        "worker_ipc_overhead": round(overhead or 0.0, 5),
        "worker_vs_in_process": round(remote[0] / local[0] - 1, 4),
        "worker_start_s": round(worker.start_seconds, 2),
        "model_load_s": round(worker.info.load_seconds, 2),
        "same_replies": f"{same}/{len(requests)}",
    }


def _best(run: Any, repeats: int) -> tuple[float, list[Completion]]:
    best, out = float("inf"), []
    for _ in range(repeats):
        started = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - started)
    return best, out


def placement(path: Path, *, threads: int | None = None, repeats: int = 3) -> dict[str, Any]:
    """Tokens/s with repacked and with plain CPU weights, interleaved, best of ``repeats`` each."""
    threads = threads or os.cpu_count() or 1
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for _ in range(repeats):
        for mode in runs:
            runs[mode].append(_child(path, threads, mode))
    best = {mode: {k: max(r[k] for r in rs) for k in ("prompt_tps", "gen_tps")} for mode, rs in runs.items()}
    return {
        "threads": threads,
        "repacked": best["on"],
        "plain": best["off"],
        "plain_prompt_ratio": round(best["off"]["prompt_tps"] / best["on"]["prompt_tps"], 3),
        "plain_gen_ratio": round(best["off"]["gen_tps"] / best["on"]["gen_tps"], 3),
    }


def threads(path: Path) -> dict[str, Any]:
    """Generation tokens/s with 1 thread and with every core, idle and beside one busy process."""
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"cores": cores}
    for load in ("idle", "busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
        try:
            for n in sorted({1, cores}):
                out[f"{load}_{n}_threads"] = _child(path, n, "on")
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    return out


def _child(path: Path, threads: int, repack: str) -> dict[str, float]:
    code = (
        "import json, sys, time; from pathlib import Path; from kg_etl.llm.runtime import LocalModel, Sampling\n"
        f"m = LocalModel(Path({str(path)!r}), n_ctx=2048, n_gpu_layers=0, n_threads={threads}, "
        f"sampling=Sampling.deterministic(), cpu_repack={repack!r})\n"
        f"m.evaluate_prefix({_PROMPT[:200]!r})\n"
        f"t = time.perf_counter(); p = m.evaluate_prefix({_PROMPT!r}); tp = time.perf_counter() - t\n"
        "t = time.perf_counter(); c = m.complete(' Summary:', prefix=p, max_tokens=32); tg = time.perf_counter() - t\n"
        "print(json.dumps({'prompt_tps': round(len(p.tokens) / tp, 1), 'gen_tps': round(c.completion_tokens / tg, 1)}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=900)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def switch(path: Path, *, threads: int | None = None) -> dict[str, Any]:
    """Memory here and on the GPU before, during and after one model worker: closing must give it all back."""
    spec = WorkerSpec(
        str(path), 4096, -1, False, threads or os.cpu_count() or 1, Sampling.deterministic(), 8, 4096, True
    )
    before, gpu_before = current_rss_mb(), gpu_memory_used_mb()
    with ModelWorker(spec) as worker:
        worker.generate(_requests(1, max_tokens=8)[:2])
        during, gpu_during = current_rss_mb(), gpu_memory_used_mb()
    return {
        "parent_rss_mb_before": before,
        "parent_rss_mb_with_worker": during,
        "parent_rss_mb_after_close": current_rss_mb(),
        "worker_peak_rss_mb": worker.peak_rss_mb,
        "gpu_used_mb_before": gpu_before,
        "gpu_used_mb_with_worker": gpu_during,
        "gpu_used_mb_after_close": gpu_memory_used_mb(),
    }


def parallel_memory(path: Path, *, sized: int = 7424, whole: int = N_CTX) -> dict[str, Any]:
    """Peak RSS of a worker that decodes the same requests with 1 sequence, 8 sized ones, 8 of the whole context."""
    requests = _requests(1, max_tokens=16)
    figures: dict[str, Any] = {"sequence_tokens": sized, "n_ctx": whole}
    for label, parallel, context in (("one", 1, sized), ("eight_sized", 8, sized), ("eight_whole", 8, whole)):
        spec = WorkerSpec(str(path), context, 0, False, 1, Sampling.deterministic(), parallel, context, True)
        with ModelWorker(spec) as worker:
            worker.generate(requests)
        figures[f"{label}_peak_rss_mb"] = worker.peak_rss_mb
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="1.2b")
    parser.add_argument("--chunks", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-") as tmp:
        path = write_tiny_model(Path(tmp) / f"lfm2-{args.preset}-random.gguf", preset=args.preset)
        figures = {
            "ipc": ipc(path, n_chunks=args.chunks),
            "switch": switch(path),
            "parallel_memory": parallel_memory(path),
            "placement": placement(path),
            "threads": threads(path),
        }
    print(json.dumps(figures, indent=2), flush=True)


if __name__ == "__main__":
    main()
