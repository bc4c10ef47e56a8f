"""Batched decoding (``ParallelDecoder``) against the sequential path (``LocalModel.generate``).

Run: ``python -m kg_etl.bench.bench_parallel [--preset 1.2b] [--repeats 2] [-n 1 4 8 16]``; or ``run()`` for
the figures. A random-weight LFM2 of the preset's real shapes is written to a temporary file (deleted at the
end) unless a GGUF is given: speeds are real, replies are noise.

The workload is one batch of a pipeline run: ``n_prefixes`` chunk prefixes (system prompt + chunk text,
~``prefix_tokens`` each) times ``n_suffixes`` extractor instructions (~``suffix_tokens`` each), every reply
constrained by a small schema's grammar and capped at ``max_tokens``, greedy, so both paths must produce the
same replies (``matches`` counts those that do). Each configuration runs ``repeats`` times, interleaved, and
its fastest run is kept: other processes share these cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.llm.grammar import schema_grammar
from kg_etl.llm.parallel import ParallelDecoder
from kg_etl.llm.runtime import Completion, GenRequest, LocalModel, Sampling
from kg_etl.testing import write_tiny_model

__all__ = ["main", "run"]

_TEXT = (
    "The river authority measured nitrate levels at twelve stations between March and October; the "
    "upstream stations stayed below the limit while three stations near the fertiliser plant exceeded "
    "it in July, which the report attributes to runoff after heavy rain. "
)
_TASKS = (
    "List the organisations named",
    "List the places named",
    "List the measurements reported",
    "List the dates and periods",
    "List the causes and effects",
    "List the chemicals mentioned",
    "List the regulatory limits",
    "List the recommendations made",
)


class _Keywords(BaseModel):
    """The reply schema: small and bounded, like the extractors' own."""

    model_config = ConfigDict(extra="forbid")
    keywords: list[Annotated[str, Field(max_length=16)]] = Field(max_length=4, description="key terms")
    topic: str = Field(max_length=24, description="the topic")


def run(
    model_path: Path | None = None,
    *,
    preset: str = "1.2b",
    n_values: Sequence[int] = (1, 4, 8, 16),
    repeats: int = 2,
    n_prefixes: int = 2,
    n_suffixes: int = 8,
    prefix_tokens: int = 400,
    suffix_tokens: int = 60,
    max_tokens: int = 48,
    n_threads: int | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Time the same requests sequentially and with each ``n_parallel`` in ``n_values``.

    ``progress`` is called with each run's name and figures as it ends.
    """
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-", dir="/tmp") as tmp:
        path = model_path or write_tiny_model(Path(tmp) / f"lfm2-{preset}-random.gguf", preset=preset)
        threads = n_threads or os.cpu_count() or 1
        n_ctx = 2 * (prefix_tokens + suffix_tokens + max_tokens)
        with LocalModel(
            path, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=0, sampling=Sampling.deterministic()
        ) as model:
            requests = _requests(model, n_prefixes, n_suffixes, prefix_tokens, suffix_tokens, max_tokens)
            figures = _measure(model, requests, n_values, repeats, n_ctx, progress or (lambda *_: None))
            # What evaluating every prompt in full would cost: the baseline for prefix sharing.
            unshared = sum(len(model.tokenize(r.prefix)) + len(model.tokenize(r.suffix)) for r in requests)
        return figures | {
            "model": path.name,
            "threads": threads,
            "requests": len(requests),
            "prompt_tokens_unshared": unshared,
        }


def _requests(
    model: LocalModel, n_prefixes: int, n_suffixes: int, prefix_tokens: int, suffix_tokens: int, max_tokens: int
) -> list[GenRequest]:
    grammar = schema_grammar(_Keywords)
    requests = []
    for c in range(n_prefixes):
        head = (
            f"<|startoftext|><|im_start|>system\nYou extract knowledge from documents.<|im_end|>\n"
            f"<|im_start|>user\nChunk {c}:\n"
        )
        prefix = _fit(model, head, f"{c} {_TEXT}" * 40, prefix_tokens)
        for t in range(n_suffixes):
            task = f"\n{_TASKS[t % len(_TASKS)]} in chunk {c}. Reply with JSON: keywords and a topic. "
            suffix = _fit(model, "", task + _TEXT, suffix_tokens - 6) + "<|im_end|>\n<|im_start|>assistant\n"
            requests.append(GenRequest(prefix, suffix, grammar, max_tokens))
    return requests


def _fit(model: LocalModel, head: str, text: str, tokens: int) -> str:
    """``head`` + as many words of ``text`` as keep it within ``tokens`` tokens."""
    words = text.split()
    low, high = 0, len(words)
    while low < high:
        mid = (low + high + 1) // 2
        if len(model.tokenize(head + " ".join(words[:mid]))) <= tokens:
            low = mid
        else:
            high = mid - 1
    return head + " ".join(words[:low])


def _measure(
    model: LocalModel,
    requests: list[GenRequest],
    n_values: Sequence[int],
    repeats: int,
    n_ctx: int,
    progress: Callable[[str, dict[str, Any]], None],
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    reference: list[Completion] = []
    for _ in range(repeats):
        row, reference = _timed(model, lambda: model.generate(requests))
        runs.setdefault("sequential", []).append(row)
        progress("sequential", row)
        for n in n_values:
            with _LlamaLog() as log, ParallelDecoder(model, n, n_ctx_per_seq=n_ctx) as decoder:
                memory = log.memory_mib()
                row, replies = _timed(model, functools.partial(decoder.generate, requests))
            row |= memory | {"matches": sum(a.text == b.text for a, b in zip(reference, replies, strict=True))}
            runs.setdefault(f"parallel_{n}", []).append(row)
            progress(f"parallel_{n}", row)
    best = {name: min(rows, key=lambda r: r["wall_s"]) for name, rows in runs.items()}
    least_cpu = {name: min(r["cpu_s"] for r in rows) for name, rows in runs.items()}
    for name, row in best.items():
        row["speedup"] = round(best["sequential"]["wall_s"] / row["wall_s"], 2)
        row["cpu_speedup"] = round(least_cpu["sequential"] / least_cpu[name], 2)
    return {"results": best, "finish_reasons": _reasons(reference)}


def _timed(model: LocalModel, call: Callable[[], list[Completion]]) -> tuple[dict[str, Any], list[Completion]]:
    before = model.stats.prompt_tokens
    started, cpu = time.perf_counter(), time.process_time()
    replies = call()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    generated = sum(c.completion_tokens for c in replies)
    # Prompt tokens from the model's stats: the sequential path counts its prefixes there, not per reply.
    evaluated = model.stats.prompt_tokens - before
    return {
        "wall_s": round(wall, 2),
        # CPU seconds of this process (all threads): steadier than wall time when other processes
        # share the cores, and a fair measure of work with one thread (more threads also count spinning).
        "cpu_s": round(cpu, 2),
        "generated_tokens": generated,
        "prompt_tokens_evaluated": evaluated,
        "generated_tok_s": round(generated / wall, 1),
        "total_tok_s": round((generated + evaluated) / wall, 1),
    }, replies


def _reasons(replies: list[Completion]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in replies:
        counts[c.finish_reason] = counts.get(c.finish_reason, 0) + 1
    return counts


class _LlamaLog(logging.Handler):
    """Collects llama.cpp's log lines (routed to the ``kg_etl.llama`` logger) while a context is made."""

    # What llama.cpp reports when it allocates a context, under the name the figures give it.
    _SIZES: ClassVar[dict[str, re.Pattern[str]]] = {
        "kv_mib": re.compile(r"llama_kv_cache: size = +([\d.]+) MiB"),
        "recurrent_mib": re.compile(r"llama_memory_recurrent: size = +([\d.]+) MiB"),
        "compute_mib": re.compile(r"compute buffer size = +([\d.]+) MiB"),
    }

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._logger = logging.getLogger("kg_etl.llama")
        self._level = self._logger.level

    def __enter__(self) -> _LlamaLog:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def memory_mib(self) -> dict[str, float]:
        found = {}
        for name, pattern in self._SIZES.items():
            sizes = [float(m.group(1)) for line in self.lines if (m := pattern.search(line))]
            if sizes:
                found[name] = sum(sizes)
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", nargs="?", type=Path, help="a GGUF (default: write a random one)")
    parser.add_argument("--preset", default="1.2b")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("-n", type=int, nargs="+", default=[1, 4, 8, 16], help="n_parallel values")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    # A plain kill unwinds too, so the temporary model file (730 MB for 1.2b) is deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures = run(
        args.model,
        preset=args.preset,
        n_values=args.n,
        repeats=args.repeats,
        n_threads=args.threads,
        progress=lambda name, row: print(name, json.dumps(row), file=sys.stderr, flush=True),
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
