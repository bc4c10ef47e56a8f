"""The models of a run: each loaded on first use, at most one resident unless asked, all closed explicitly.

Every extractor shares one model by default. A user may give an extractor a model of its own (QA validation
on LFM2-700M, say); the pipeline then orders its work by model so that each distinct model is loaded once,
and the pool closes the resident model before it loads another (unless ``keep_loaded``): the user's earlier
pipeline died of GPU out-of-memory with every step's model resident at once. A job for a model that is not
resident is still run, correctly, by swapping models: ordering the work well is an optimisation, and
``ModelUse.loads`` shows whether it held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from kg_etl.config import IngestSettings
from kg_etl.extract.base import Job, Reply
from kg_etl.llm.backend import LlamaBackend
from kg_etl.llm.parallel import ParallelDecoder
from kg_etl.llm.registry import resolve_model
from kg_etl.llm.runtime import LocalModel, ModelStats, Sampling, Tokenizer, model_file_id

__all__ = ["ModelPool", "ModelUse", "PooledBackend"]

_MIN_CTX = 512  # llama.cpp's smallest useful context


class ModelUse(BaseModel):
    """What one model did in a run: how often it was loaded, where it ran, and what it generated."""

    name: str
    model_id: str
    loads: int = 0
    offloaded: bool = False
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = Field(default=0.0, description="time spent generating")


class _Resident:
    """A loaded model and, with ``parallel > 1``, the batched decoder that shares its weights."""

    def __init__(self, model: LocalModel, engine: ParallelDecoder | None) -> None:
        self.model, self.engine = model, engine
        self.backend = LlamaBackend(model, engine)

    def close(self) -> None:
        if self.engine is not None:  # it holds a context on the model's weights: closed first
            self.engine.close()
        self.model.close()


class ModelPool:
    """Loads the run's models by reference (manifest name or .gguf path) as work needs them."""

    def __init__(self, settings: IngestSettings, notify: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._notify = notify or (lambda _: None)
        self._paths: dict[str, Path] = {}
        self._tokenizers: dict[str, Tokenizer] = {}
        self._resident: dict[str, _Resident] = {}
        self.usage: dict[str, ModelUse] = {}
        self.max_resident = 0

    def path(self, ref: str) -> Path:
        """The model's file, downloaded first where the settings allow it."""
        if ref not in self._paths:
            self._paths[ref] = resolve_model(ref, download=self.settings.download)
        return self._paths[ref]

    def model_id(self, ref: str) -> str:
        """The model's cache identity, read from its file: nothing is loaded."""
        return self._use(ref).model_id

    def tokenizer(self, ref: str) -> Tokenizer:
        if ref not in self._tokenizers:
            self._tokenizers[ref] = Tokenizer(self.path(ref))
        return self._tokenizers[ref]

    def backend(self, ref: str) -> LlamaBackend:
        """The model's backend, loading it (and first closing the resident one, unless kept) if needed."""
        resident = self._resident.get(ref)
        if resident is None:
            if not self.settings.keep_models_loaded:
                self.release_all()
            resident = self._load(ref)
        return resident.backend

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    def stats(self) -> ModelStats:
        """Totals over every model of the run so far, resident or closed."""
        total = ModelStats()
        for use in self.usage.values():
            total.calls += use.calls
            total.prompt_tokens += use.prompt_tokens
            total.completion_tokens += use.completion_tokens
            total.seconds += use.seconds
        for resident in self._resident.values():
            live = resident.model.stats
            total.calls += live.calls
            total.prompt_tokens += live.prompt_tokens
            total.completion_tokens += live.completion_tokens
            total.seconds += live.seconds
        return total

    def release(self, ref: str) -> None:
        """Close a resident model now, keeping what it did in ``usage``."""
        resident = self._resident.pop(ref, None)
        if resident is None:
            return
        use, stats = self.usage[ref], resident.model.stats
        use.calls += stats.calls
        use.prompt_tokens += stats.prompt_tokens
        use.completion_tokens += stats.completion_tokens
        use.seconds += stats.seconds
        resident.close()

    def release_all(self) -> None:
        for ref in list(self._resident):
            self.release(ref)

    def close(self) -> None:
        """Close every model and tokenizer: their memory (VRAM included) is freed now, not at exit."""
        self.release_all()
        for tokenizer in self._tokenizers.values():
            tokenizer.close()
        self._tokenizers.clear()

    def _use(self, ref: str) -> ModelUse:
        if ref not in self.usage:
            path = self.path(ref)
            self.usage[ref] = ModelUse(name=path.stem, model_id=model_file_id(path))
        return self.usage[ref]

    def _load(self, ref: str) -> _Resident:
        s, use = self.settings, self._use(ref)
        # With a batched decoder every generation runs in the decoder's context, so the model's own needs
        # only the minimum: its KV cache would be n_ctx cells (~96 MiB for 1.2B at 8k) never used.
        model = LocalModel(
            self.path(ref),
            n_ctx=s.n_ctx if s.parallel == 1 else _MIN_CTX,
            n_gpu_layers=s.gpu_layers,
            require_gpu=s.require_gpu,
            n_threads=s.threads,
            sampling=Sampling.deterministic() if s.deterministic else Sampling(),
        )
        try:
            engine = ParallelDecoder(model, s.parallel, n_ctx_per_seq=s.n_ctx) if s.parallel > 1 else None
        except BaseException:
            model.close()
            raise
        resident = self._resident[ref] = _Resident(model, engine)
        use.loads += 1
        use.offloaded = model.offloaded
        self.max_resident = max(self.max_resident, len(self._resident))
        where = "GPU (all layers offloaded)" if model.offloaded else "CPU"
        self._notify(f"model {model.path.name} loaded on the {where}")
        return resident


class PooledBackend:
    """A backend for one model of the pool: knows its model id without loading it, loads it on first job."""

    def __init__(self, pool: ModelPool, ref: str) -> None:
        self.pool, self.ref = pool, ref

    @property
    def model_id(self) -> str:
        return self.pool.model_id(self.ref)

    def run(self, jobs: Sequence[Job]) -> list[Reply]:
        return self.pool.backend(self.ref).run(jobs)
