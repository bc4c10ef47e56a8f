"""Prompt-state reuse (``LocalModel.generate``) against the naive design: one completion per extractor per chunk.

Run: ``python -m kg_etl.bench.bench_llm [--preset tiny 1.2b] [-n 3] [--max-tokens 32]``; or ``run()`` for the
figures. A random-weight LFM2 of the preset's shapes is written to a temporary file (deleted at the end):
speeds and memory are real, replies are noise.

The workload is the pipeline's: each chunk (~450 tokens of real text from a corpus PDF, or a generated
paragraph where the corpus is absent) goes through every chunk extractor (facts, taxonomy, categories,
keywords, summary, qa) with its real prompt and grammar. Both designs decode greedily with the same fixed
reply budget (``max_tokens`` for every extractor), one sequence at a time, so they differ only in what they
evaluate:

- reuse: the shared prefix (system prompt + chunk) once per chunk, its state restored for each extractor;
- naive: every extractor's full prompt from an empty context, as a fresh chat completion per extractor does
  (LFM2 cannot reuse a prefix automatically: llama.cpp cannot drop part of a hybrid model's memory).

Chunks are cut at ~450 tokens as the real LFM2 tokenizer counts them (``approx_tokens``, the chunker's
default): real text of a real size. The random models' made-up vocabularies split English into more tokens
(the 1.2B-shaped one ~1.6 characters a token, the tiny one ~1.2), so the prompts cost more tokens than a real
LFM2 pays; instructions inflate alike, so the reuse/naive ratios stay close to the real ones while absolute
speeds are pessimistic.

``same_replies`` counts the replies both designs produced identically. They can differ without a bug: the
two designs split the prompt into different llama.cpp batches, whose float results differ in the last bits,
and a random-weight model's near-tied logits turn that into another greedy token.
Each chunk is timed in both designs in alternating order and, with ``repeats`` > 1, the fastest run of each
is kept: other processes share these cores. Peak RSS is this process's (``ru_maxrss``), so it covers every
run so far in the process.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kg_etl.bench import CORPUS
from kg_etl.chunk import chunk_pages
from kg_etl.extract.base import Extractor, Job
from kg_etl.llm.backend import LlamaBackend
from kg_etl.llm.grammar import llama_grammar
from kg_etl.llm.prompt import chunk_messages
from kg_etl.llm.runtime import Completion, GenRequest, LocalModel, Sampling, peak_rss_mb
from kg_etl.models import Chunk, content_id
from kg_etl.read import open_pdf
from kg_etl.registry import select_extractors
from kg_etl.testing import write_tiny_model

__all__ = ["corpus_chunks", "main", "run"]

# English prose with few tables: chunks read like a typical report's.
PDF = "us_copyright_office_dmca_summary.pdf"
CHUNK_TOKENS = 450
EXTRACTORS = ("facts", "taxonomy", "categories", "keywords", "summary", "qa")

_PARAGRAPH = (
    "The river authority measured nitrate levels at twelve stations between March and October. The "
    "upstream stations stayed below the legal limit of 50 mg/l, while three stations near the fertiliser "
    "plant at Hollins Ferry exceeded it in July, which the report attributes to runoff after heavy rain. "
    "The authority asked the plant's operator, Brandt Agrochemicals, to build a retention basin by 2026 "
    "and will sample the affected stations weekly until then. "
)


@dataclass(frozen=True)
class _Call:
    request: GenRequest
    extractor: Extractor


def run(
    preset: str = "tiny",
    n_chunks: int = 3,
    *,
    max_tokens: int = 32,
    repeats: int = 1,
    threads: int | None = None,
    model_path: Path | None = None,
) -> dict[str, Any]:
    """Time ``n_chunks`` chunks through every chunk extractor with state reuse and without.

    Args:
        preset: a ``kg_etl.testing.PRESETS`` key, for the random-weight model written for the run.
        max_tokens: the reply budget of every extractor in both designs (replies may stop at it).
        repeats: runs per chunk and design; the fastest is kept.
        model_path: a GGUF to use instead of writing one.
    """
    chunks = corpus_chunks(n_chunks)
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="kg-etl-bench-", dir="/tmp") as tmp:
        path = model_path or write_tiny_model(Path(tmp) / f"lfm2-{preset}-random.gguf", preset=preset)
        gguf_mb = round(path.stat().st_size / 2**20, 1)
        with LocalModel(
            path, n_ctx=4096, n_gpu_layers=0, n_threads=threads, sampling=Sampling.deterministic()
        ) as model:
            extractors = select_extractors(EXTRACTORS)
            calls = [_calls(model, chunk, extractors, max_tokens) for chunk in chunks]
            model.generate([calls[0][0].request])  # warm-up: first-call allocations, grammar parsing
            figures = _compare(model, calls, repeats)
            state_mb = len(model.evaluate_prefix(calls[0][0].request.prefix).state) / 2**20
            prefix = [len(model.tokenize(c[0].request.prefix)) for c in calls]
            suffix = [len(model.tokenize(call.request.suffix)) for c in calls for call in c]
    return {
        "preset": preset,
        "gguf_mb": gguf_mb,
        "threads": threads,
        "chunks": len(chunks),
        "extractors": len(extractors),
        "max_tokens": max_tokens,
        "chunk_chars_mean": round(sum(len(c.text) for c in chunks) / len(chunks)),
        "chunk_tokens_lfm2_est": round(sum(c.n_tokens for c in chunks) / len(chunks)),
        "prefix_tokens_mean": round(sum(prefix) / len(prefix), 1),
        "suffix_tokens_mean": round(sum(suffix) / len(suffix), 1),
        **figures,
        "prefix_state_mb": round(state_mb, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def corpus_chunks(n: int) -> list[Chunk]:
    """The first ``n`` ~450-token chunks of a corpus PDF; of a generated text where the corpus is absent."""
    if (CORPUS / PDF).exists():
        doc = open_pdf(CORPUS / PDF)
        chunks = []
        for chunk in chunk_pages(doc.pages(), doc.meta.id, max_tokens=CHUNK_TOKENS):
            chunks.append(chunk)
            if len(chunks) == n:
                return chunks
    text = _PARAGRAPH * 24
    size = len(_PARAGRAPH) * 4  # ~450 tokens at ~4 characters a token
    return [
        Chunk(
            id=content_id("bench", i),
            doc_id="bench",
            index=i,
            text=text[i * 97 : i * 97 + size],  # shifted so no two chunks share a prefix
            page_start=1,
            page_end=1,
            char_start=i * 97,
            char_end=i * 97 + size,
            n_tokens=CHUNK_TOKENS,
        )
        for i in range(n)
    ]


def _calls(model: LocalModel, chunk: Chunk, extractors: Sequence[Extractor], max_tokens: int) -> list[_Call]:
    backend = LlamaBackend(model)
    return [
        _Call(
            replace(backend.request(Job(tuple(chunk_messages(chunk, PDF, e.task)), e.schema)), max_tokens=max_tokens),
            e,
        )
        for e in extractors
    ]


def _reuse(model: LocalModel, calls: Sequence[_Call]) -> list[Completion]:
    return model.generate([c.request for c in calls])


def _naive(model: LocalModel, calls: Sequence[_Call]) -> list[Completion]:
    # A fresh completion per extractor: complete() without a prefix resets the context and evaluates it all.
    return [
        model.complete(
            c.request.prefix + c.request.suffix,
            grammar=llama_grammar(c.extractor.schema),
            max_tokens=c.request.max_tokens,
        )
        for c in calls
    ]


_Design = Callable[[LocalModel, Sequence[_Call]], list[Completion]]


def _compare(model: LocalModel, per_chunk: Sequence[Sequence[_Call]], repeats: int) -> dict[str, Any]:
    designs: dict[str, _Design] = {"reuse": _reuse, "naive": _naive}
    seconds = {name: 0.0 for name in designs}
    tokens = {name: 0 for name in designs}
    generated = {name: 0 for name in designs}
    replies: dict[str, list[str]] = {name: [] for name in designs}
    for i, calls in enumerate(per_chunk):
        order = list(designs) if i % 2 == 0 else list(reversed(designs))
        for name in order:
            best = float("inf")
            for _ in range(repeats):
                before = model.stats.prompt_tokens
                started = time.perf_counter()
                out = designs[name](model, calls)
                best = min(best, time.perf_counter() - started)
            seconds[name] += best
            tokens[name] += model.stats.prompt_tokens - before  # the last repeat's: all repeats agree
            generated[name] += sum(c.completion_tokens for c in out)
            replies[name] += [c.text for c in out]
    n = len(per_chunk)
    figures: dict[str, Any] = {
        name: {
            "prompt_tokens_per_chunk": round(tokens[name] / n, 1),
            "completion_tokens_per_chunk": round(generated[name] / n, 1),
            "seconds": round(seconds[name], 2),
            "chunks_per_s": round(n / seconds[name], 3),
        }
        for name in designs
    }
    figures["prompt_tokens_ratio"] = round(tokens["naive"] / tokens["reuse"], 2)
    figures["speedup"] = round(seconds["naive"] / seconds["reuse"], 2)
    figures["same_replies"] = f"{sum(a == b for a, b in zip(replies['reuse'], replies['naive'], strict=True))}/"
    figures["same_replies"] += str(len(replies["reuse"]))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["tiny", "1.2b"])
    parser.add_argument("-n", "--chunks", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    for preset in args.preset:
        figures = run(preset, args.chunks, max_tokens=args.max_tokens, repeats=args.repeats, threads=args.threads)
        print(json.dumps(figures, indent=2), flush=True)


if __name__ == "__main__":
    main()
