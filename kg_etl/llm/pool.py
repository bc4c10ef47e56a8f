"""The models of a run: each started on first use in a worker process, at most one resident unless asked.

Every extractor shares one model by default. A user may give an extractor a model of its own (QA validation
on LFM2-700M, say); the pipeline then orders its work by model so that each distinct model is loaded once,
and the pool closes the resident model before it loads another (unless ``keep_loaded``): the user's earlier
pipeline died of GPU out-of-memory with every step's model resident at once. Each model runs in a worker
process of its own (``kg_etl.llm.worker``), so closing it gives every byte of its RAM and VRAM back to the
OS, and a crash inside llama.cpp kills only that process: the run says so in one line instead of vanishing.
A job for a model that is not resident is still run, correctly, by swapping models: ordering the work well
is an optimisation, and ``ModelUse.loads`` shows whether it held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from kg_etl.config import IngestSettings
from kg_etl.defaults import PARALLEL, PARALLEL_CPU
from kg_etl.extract.base import Backend, Job, OnReply, Reply
from kg_etl.llm.placement import resolve_placement
from kg_etl.llm.protocol import WorkerSpec
from kg_etl.llm.registry import resolve_model, spec_for
from kg_etl.llm.runtime import ModelStats, Sampling, Tokenizer, default_threads, gpu_offload_supported, model_file_id
from kg_etl.llm.worker import ModelWorker, WorkerBackend

__all__ = ["ModelPool", "ModelUse", "PooledBackend", "trained_context"]


class ModelUse(BaseModel):
    """What one model did in a run: how often it was loaded, where it ran, and what it generated."""

    name: str
    model_id: str
    loads: int = 0
    offloaded: bool = False
    server: str | None = Field(default=None, description="the model server it ran on (--llm), if not here")
    placement: str = Field(default="", description="CPU weights: repacked, or plain (and why)")
    threads: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = Field(default=0.0, description="time spent generating")
    worker_peak_rss_mb: float | None = Field(default=None, description="the most memory its worker process held")
    ipc_seconds: float = Field(default=0.0, description="time spent passing work to and from the worker")


class ModelPool:
    """Starts the run's models (by manifest name or .gguf path) in worker processes as work needs them."""

    def __init__(self, settings: IngestSettings, notify: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._notify = notify or (lambda _: None)
        self._paths: dict[str, Path] = {}
        self._tokenizers: dict[str, Tokenizer] = {}
        self._resident: dict[str, WorkerBackend] = {}
        self.usage: dict[str, ModelUse] = {}
        self.max_resident = 0
        self.load_seconds = 0.0  # starting workers and loading their models, over the run
        # The context one sequence can need (chunk, instructions, longest reply), from what the run extracts;
        # the pipeline sets it, counted with the run's tokenizer when the first model loads. None: n_ctx.
        self.sequence_context: Callable[[], int] | None = None

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

    def backend(self, ref: str) -> Backend:
        """The model's backend, starting its worker (and first ending the resident one, unless kept) if needed."""
        resident = self._resident.get(ref)
        if resident is None:
            if not self.settings.keep_models_loaded:
                self.release_all()
            resident = self._load(ref)
        return resident

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    def stats(self) -> ModelStats:
        """Totals over every model of the run so far, resident or closed."""
        total = ModelStats()
        parts: list[ModelUse | ModelStats] = [*self.usage.values()]
        parts += [backend.worker.stats for backend in self._resident.values()]
        for part in parts:
            total.calls += part.calls
            total.prompt_tokens += part.prompt_tokens
            total.completion_tokens += part.completion_tokens
            total.seconds += part.seconds
        return total

    def release(self, ref: str) -> None:
        """End a resident model's worker now (all of its memory goes back), keeping what it did in ``usage``."""
        backend = self._resident.pop(ref, None)
        if backend is None:
            return
        worker, use = backend.worker, self.usage[ref]
        try:
            worker.close()
        finally:
            use.calls += worker.stats.calls
            use.prompt_tokens += worker.stats.prompt_tokens
            use.completion_tokens += worker.stats.completion_tokens
            use.seconds += worker.stats.seconds
            use.ipc_seconds += max(0.0, worker.wall_seconds - worker.worker_seconds)
            use.worker_peak_rss_mb = max(use.worker_peak_rss_mb or 0.0, worker.peak_rss_mb or 0.0) or None

    def release_all(self) -> None:
        for ref in list(self._resident):
            self.release(ref)

    def close(self) -> None:
        """End every worker and close every tokenizer: their memory (VRAM included) is freed now."""
        self.release_all()
        for tokenizer in self._tokenizers.values():
            tokenizer.close()
        self._tokenizers.clear()

    def _use(self, ref: str) -> ModelUse:
        if ref not in self.usage:
            path = self.path(ref)
            self.usage[ref] = ModelUse(name=path.stem, model_id=model_file_id(path))
        return self.usage[ref]

    def _load(self, ref: str) -> WorkerBackend:
        s, use, path = self.settings, self._use(ref), self.path(ref)
        threads = s.threads or default_threads()
        placement = resolve_placement(path, s.cpu_repack, n_gpu_layers=s.gpu_layers, threads=threads)
        if placement.source == "probe" and placement.crashed:
            self._notify(f"{path.name}: {placement.reason}; using plain CPU buffers (kg-etl doctor says more)")
        context = min(s.n_ctx, self.sequence_context() if self.sequence_context is not None else s.n_ctx)
        trained = trained_context(self.tokenizer(ref).metadata)
        if trained is not None and context > trained:
            # Past the context it was trained on a model's output turns to junk; a request that needs more
            # fails alone, with the reason (TOO_LONG), instead of silently reading garbage.
            self._notify(f"{path.name} was trained on {trained} tokens of context; requests are capped there")
            context = trained
        spec = WorkerSpec(
            path=str(path),
            n_ctx=context,
            n_gpu_layers=s.gpu_layers,
            require_gpu=s.require_gpu,
            threads=threads,
            sampling=Sampling.deterministic() if s.deterministic else _sampling_for(ref, path),
            parallel=s.parallel or (PARALLEL if s.gpu_layers != 0 and gpu_offload_supported() else PARALLEL_CPU),
            n_ctx_per_seq=context,
            extra_bufts=placement.extra_bufts,
            chat_template=s.chat_template,
        )
        backend = self._resident[ref] = WorkerBackend(ModelWorker(spec))
        info = backend.worker.info
        use.loads += 1
        use.offloaded, use.placement, use.threads = info.offloaded, placement.label, threads
        self.max_resident = max(self.max_resident, len(self._resident))
        where = "GPU (all layers offloaded)" if info.offloaded else f"CPU ({threads} threads, {placement.label})"
        seconds = backend.worker.start_seconds
        self.load_seconds += seconds
        self._notify(f"model {path.name} loaded on the {where} in {seconds:.1f} s (worker pid {info.pid})")
        return backend


def trained_context(metadata: Mapping[str, str]) -> int | None:
    """The context length a GGUF's model was trained on (``<architecture>.context_length``), if it says."""
    value = metadata.get(f"{metadata.get('general.architecture', '')}.context_length", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _sampling_for(ref: str, path: Path) -> Sampling:
    """The model's own recommended sampling (from the manifest), for a name or a known file; else LFM2's."""
    spec = spec_for(ref) or spec_for(path.name)
    return spec.sampling_settings() if spec is not None else Sampling()


class PooledBackend:
    """A backend for one model of the pool: knows its model id without loading it, loads it on first job."""

    def __init__(self, pool: ModelPool, ref: str) -> None:
        self.pool, self.ref = pool, ref

    @property
    def model_id(self) -> str:
        return self.pool.model_id(self.ref)

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        return self.pool.backend(self.ref).run(jobs, on_reply)
