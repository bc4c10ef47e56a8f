"""The LLM stage on a GPU, small and self-contained: naive vs kg-etl sequential (prefix reuse) vs parallel.

Runs where only llama-cpp-python (CUDA build), pydantic and langchain-core are installed: no graph, no PDF
reader. Chunks come from a JSON file of real corpus chunks (``kg_etl/bench/bench_gpu.py --write-chunks``).
Each step's figures are written to $OUT/gpu_quick.json as soon as they exist, so a crash keeps the rest.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kg_etl.extract.base import Job
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import FACTS
from kg_etl.extract.keywords import KEYWORDS
from kg_etl.extract.qa import QA
from kg_etl.extract.summary import SUMMARY
from kg_etl.extract.taxonomy import TAXONOMY
from kg_etl.llm.backend import LlamaBackend
from kg_etl.llm.prompt import chunk_messages
from kg_etl.llm.runtime import LocalModel, Sampling, gpu_memory_used_mb, gpu_offload_supported
from kg_etl.models import Chunk
from kg_etl.testing import write_tiny_model

__all__ = ["main"]

OUT = Path(os.environ.get("OUT", "/tmp")) / "gpu_quick.json"
EXTRACTORS = [FACTS, TAXONOMY, categories_extractor(), KEYWORDS, SUMMARY, QA]


def main(preset: str, n_chunks: int, max_tokens: int, parallel: list[int]) -> None:
    data = json.loads(Path(".gpu/chunks.json").read_text())["chunks"][:n_chunks]
    chunks = [Chunk(**{k: c[k] for k in Chunk.model_fields if k in c}) for c in data]
    pages = sum(c.page_end - c.page_start + 1 for c in chunks) / len(chunks)
    res: dict[str, Any] = {
        "preset": preset,
        "chunks": len(chunks),
        "pages_per_chunk": round(pages, 3),
        "max_tokens": max_tokens,
        "gpu_offload_supported": gpu_offload_supported(),
        "vram_before_mb": gpu_memory_used_mb(),
    }

    def save(step: str, seconds: float, completions: list[Any]) -> None:
        cps = len(chunks) / seconds
        res[step] = {
            "seconds": round(seconds, 2),
            "chunks_per_s": round(cps, 3),
            "pages_per_min": round(cps * pages * 60, 1),
            "generated_tok_per_s": round(sum(c.completion_tokens for c in completions) / seconds, 1),
            "prompt_tokens_per_chunk": round(sum(c.prompt_tokens for c in completions) / len(chunks), 1),
        }
        OUT.write_text(json.dumps(res, indent=2))
        print(step, res[step], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_model(Path(tmp) / "m.gguf", preset=preset)
        res["gguf_mb"] = round(path.stat().st_size / 2**20, 1)
        with LocalModel(path, n_ctx=8192, n_gpu_layers=-1, sampling=Sampling.deterministic()) as model:
            res["offloaded"] = model.offloaded
            res["vram_after_load_mb"] = gpu_memory_used_mb()
            backend = LlamaBackend(model)
            requests = [
                replace(backend.request(Job(tuple(chunk_messages(c, "DMCA", e.task)), e.schema)), max_tokens=max_tokens)
                for c in chunks
                for e in EXTRACTORS
            ]
            model.generate(requests[:1])
            t = time.perf_counter()
            naive = [
                model.complete(r.prefix + r.suffix, max_tokens=r.max_tokens, grammar=_grammar(r.grammar))
                for r in requests
            ]
            save("naive", time.perf_counter() - t, naive)
            t = time.perf_counter()
            seq = model.generate(requests)
            save("sequential", time.perf_counter() - t, seq)
            from kg_etl.llm.parallel import ParallelDecoder

            for n in parallel:
                with ParallelDecoder(model, n, n_ctx_per_seq=2048) as decoder:
                    t = time.perf_counter()
                    out = decoder.generate(requests)
                    save(f"parallel_{n}", time.perf_counter() - t, out)
                    res[f"parallel_{n}"]["vram_mb"] = gpu_memory_used_mb()
                    OUT.write_text(json.dumps(res, indent=2))
    best = max((v["chunks_per_s"] for k, v in res.items() if k.startswith("parallel_")), default=None)
    if best:
        res["speedup_vs_naive"] = round(best / res["naive"]["chunks_per_s"], 2)
        res["parallel_speedup_vs_sequential"] = round(best / res["sequential"]["chunks_per_s"], 2)
    OUT.write_text(json.dumps(res, indent=2))
    print(json.dumps(res), flush=True)


def _grammar(gbnf: str | None) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf, verbose=False) if gbnf else None


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(x) for x in sys.argv[4:]])
