"""The resident model: one llama.cpp model loaded per run, shared by every extractor, closed explicitly.

LFM2 is a hybrid (short convolutions + attention): llama.cpp cannot drop part of its memory, so its automatic
prompt-prefix reuse re-evaluates every prompt in full. What works is evaluating the shared prefix (system
prompt + chunk text) once, snapshotting the context state, and restoring that snapshot before each
extractor's call, so only the extractor's own instructions and its reply are evaluated.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.errors import GpuUnavailableError, KgEtlError, ModelError

__all__ = [
    "CUDA_BUILD_HINT",
    "TOO_LONG",
    "Completion",
    "GenRequest",
    "LocalModel",
    "ModelStats",
    "OnDone",
    "Prefix",
    "Sampling",
    "Tokenizer",
    "current_rss_mb",
    "default_threads",
    "gpu_devices",
    "gpu_memory_used_mb",
    "gpu_offload_supported",
    "model_file_id",
    "peak_rss_mb",
    "too_long",
    "vram_used_mb",
]

CUDA_BUILD_HINT = (
    'reinstall llama-cpp-python with CUDA: CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native" '
    "pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36"
)


class Sampling(BaseModel):
    """Sampling settings; the defaults are LiquidAI's recommendations for LFM2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    min_p: float = Field(default=0.15, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.05, ge=1.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    seed: int = 0

    @classmethod
    def deterministic(cls) -> Sampling:
        """Greedy decoding: the same prompt always gives the same reply (tests, benchmarks)."""
        return cls(temperature=0.0, min_p=0.0, repeat_penalty=1.0)


class Completion(BaseModel):
    """One generated reply and what it cost."""

    text: str
    finish_reason: str
    prompt_tokens: int = Field(description="prompt tokens evaluated for this call (not reused from state)")
    completion_tokens: int
    seconds: float


@dataclass
class ModelStats:
    """Running totals over the model's lifetime, for the end-of-run report and the benchmark."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def add(self, completion: Completion) -> None:
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.seconds += completion.seconds


@dataclass(frozen=True)
class GenRequest:
    """One generation: a prompt split where the shared part ends, a GBNF grammar and a token budget.

    Requests with the same ``prefix`` share its evaluation: it is computed once per ``generate`` call.
    """

    prefix: str
    suffix: str
    grammar: str | None = None
    max_tokens: int = 512


# Called with a request's index and its completion as soon as it finishes.
OnDone = Callable[[int, Completion], None]

# The finish reason of a request that was not run because its prompt and reply cannot fit the context; its
# text says the sizes. The request fails, not the whole call: the next chunk may well fit.
TOO_LONG = "too_long"


def too_long(prompt_tokens: int, max_tokens: int, n_ctx: int) -> Completion:
    """The completion of a request that does not fit: nothing generated, nothing evaluated."""
    text = f"a prompt of {prompt_tokens} tokens and a reply of up to {max_tokens} in {n_ctx} tokens of context"
    return Completion(text=text, finish_reason=TOO_LONG, prompt_tokens=0, completion_tokens=0, seconds=0.0)


@dataclass(frozen=True)
class Prefix:
    """An evaluated prompt prefix: its tokens and the context state right after them."""

    tokens: tuple[int, ...]
    state: bytes = field(repr=False)


_LOG = logging.getLogger("kg_etl.llama")
_log_callback: Any = None  # kept referenced: llama.cpp holds a raw pointer to it


def _route_llama_logs() -> None:
    """Send llama.cpp's own log lines to Python logging (shown with -v), not straight to stderr.

    llama.cpp's levels are not a guide: it reports harmless facts at error level even with
    ``verbose=False`` (LFM2's conv layers have no KV heads, so it "pads the V cache"), while real failures
    reach us as exceptions anyway. So every line is logged at DEBUG, and none breaks into the progress display.
    """
    global _log_callback
    import llama_cpp

    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def callback(level: int, text: bytes, _: Any) -> None:
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            _LOG.debug("%s", line)

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux it is ``VmHWM``, the high-water mark of this program's own memory: ``ru_maxrss`` survives
    ``exec``, so a process started by a large one (a worker, an ingest run from pytest) would report its
    parent's size.
    """
    import resource
    import sys

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def current_rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux /proc; the peak where that is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()
    return round(pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20), 1)


def vram_used_mb() -> float | None:
    """GPU memory this process holds now, in MiB, best effort: None on a CPU build or where it cannot be seen.

    It is the current figure, not a peak: read it while the model is loaded (``close()`` frees it). It counts
    the CUDA context too (~0.5 GiB on an H200). Read from ``nvidia-smi`` (NVIDIA only); a container that
    cannot see its own process there gives None rather than a guess.
    """
    if not gpu_offload_supported():
        return None
    return _process_vram_mb(os.getpid())


def _process_vram_mb(pid: int) -> float | None:
    """The GPU memory ``nvidia-smi`` lists for ``pid`` over all GPUs, or None if it lists none."""
    out = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if out is None:
        return None
    # used_memory reads "[N/A]" where the driver cannot attribute memory (MIG, WDDM): no figure then.
    rows = (line.partition(",") for line in out.splitlines())
    used = [float(mib) for p, _, mib in rows if p.strip() == str(pid) and mib.strip().isdigit()]
    return round(sum(used), 1) if used else None


def gpu_memory_used_mb() -> float | None:
    """Memory in use on the first GPU, all processes together, in MiB; None where nvidia-smi cannot tell."""
    out = _nvidia_smi("--query-gpu=memory.used")
    try:
        return float(out.split()[0]) if out else None
    except ValueError:
        return None


def gpu_devices() -> list[str]:
    """Each NVIDIA GPU as "name: free of total MiB", from nvidia-smi; [] where there is none to ask."""
    out = _nvidia_smi("--query-gpu=name,memory.free,memory.total") or ""
    rows = [[part.strip() for part in line.split(",")] for line in out.splitlines() if line.strip()]
    return [f"{name}: {free} MiB free of {total}" for name, free, total in (r for r in rows if len(r) == 3)]


def _nvidia_smi(query: str) -> str | None:
    """``nvidia-smi QUERY`` as bare CSV, or None where there is no nvidia-smi or it fails."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        return subprocess.run(
            [smi, query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build can offload layers to a GPU (a CPU build cannot)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def model_file_id(path: Path) -> str:
    """Identifies a GGUF's weights in cache keys, without loading it: file name, size, hash of the header.

    Names and sizes can repeat across different weights (re-quantised files); the first MiB holds the GGUF
    header and metadata and tells them apart without hashing gigabytes per run.
    """
    with path.open("rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
    return f"{path.name}:{path.stat().st_size}:{head}"


class Tokenizer:
    """A GGUF's tokenizer alone (llama.cpp ``vocab_only``): milliseconds and a few MiB to load, no weights.

    Chunking counts tokens with it, so a run that finds every chunk in the cache never loads a model, and
    chunks are cut the same way whichever model happens to be resident.
    """

    def __init__(self, path: Path) -> None:
        import llama_cpp

        _route_llama_logs()
        self.path = path
        try:
            self._handle: Any = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(
                f"{path}: llama.cpp cannot read this model's tokenizer ({e}); check the file is a complete "
                "GGUF (`kg-etl models pull` re-downloads it)"
            ) from e

    def count_tokens(self, text: str) -> int:
        """How many tokens the model's tokenizer makes of plain ``text`` (as ``LocalModel.count_tokens``)."""
        return len(self._handle.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF's metadata (architecture, chat template...): read without the weights."""
        return dict(self._handle.metadata)

    def close(self) -> None:
        self._handle.close()


class LocalModel:
    """A GGUF model resident in this process. Use as a context manager or call ``close()``.

    Args:
        path: the .gguf file.
        n_ctx: context window in tokens; chunk + instructions + reply must fit.
        n_gpu_layers: layers to offload; -1 = all, 0 = CPU only.
        require_gpu: fail (rather than silently run on the CPU) when offload is asked for but unsupported.
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 4096,
        n_gpu_layers: int = -1,
        require_gpu: bool = False,
        n_threads: int | None = None,
        sampling: Sampling | None = None,
        cpu_repack: str = "auto",
        chat_template: str | None = None,
    ) -> None:
        import llama_cpp

        from kg_etl.llm.placement import resolve_placement

        if require_gpu and not gpu_offload_supported():
            raise GpuUnavailableError(
                f"a GPU was required (--gpu) but this llama-cpp-python build cannot offload; {CUDA_BUILD_HINT}"
            )
        _route_llama_logs()
        self.path = path
        self.sampling = sampling or Sampling()
        self.chat_template = chat_template
        self.stats = ModelStats()
        self.offloaded = n_gpu_layers != 0 and gpu_offload_supported()
        # The same count for prompt and generation: llama-cpp-python's default uses half for generation.
        threads = n_threads or default_threads()
        self.threads = threads
        self.placement = resolve_placement(path, cpu_repack, n_gpu_layers=n_gpu_layers, threads=threads)
        self._closed = False
        try:
            with _extra_buffer_types(self.placement.extra_bufts):
                self._handle: Any = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_gpu_layers=n_gpu_layers,
                    n_threads=threads,
                    n_threads_batch=threads,
                    seed=self.sampling.seed,
                    # Read the weights rather than map them: llama.cpp repacks most CPU weights into a buffer
                    # of its own (and a GPU holds its own copy), so mapped pages stay resident beside that
                    # copy for nothing: ~480 MiB more RSS for LFM2-1.2B at Q4_K_M, with no speed gained.
                    use_mmap=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(
                f"{path}: llama.cpp cannot load this model ({e}); check the file is a complete "
                "GGUF (`kg-etl models pull` re-downloads it)"
            ) from e
        try:
            self._formatter = self._chat_formatter()
        except KgEtlError:
            self.close()
            raise
        self._evals: list[int] = []
        self._wrap_eval()

    def _wrap_eval(self) -> None:
        # Record every batch llama.cpp evaluates, so the prompt tokens a call really evaluated are measured
        # rather than assumed (a failed prefix reuse would otherwise go unnoticed).
        inner = self._llm.eval

        def counting_eval(tokens: Sequence[int]) -> None:
            self._evals.append(len(tokens))
            inner(tokens)

        self._llm.eval = counting_eval

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the model and its context now (VRAM included), not whenever the GC gets to it."""
        if not self._closed:
            self._handle.close()
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def _llm(self) -> Any:
        # llama.cpp dereferences freed pointers after close(): a use after close would segfault, not raise.
        if self._closed:
            raise ModelError(f"{self.path}: the model was closed; load it again (LocalModel) to generate")
        return self._handle

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for the batched decoder, which shares its weights)."""
        return self._llm

    @functools.cached_property
    def model_id(self) -> str:
        """Identifies these weights in cache keys (see ``model_file_id``)."""
        return model_file_id(self.path)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def n_ctx(self) -> int:
        return int(self._llm.n_ctx())

    # -- text ----------------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` with special-token markup (``<|im_start|>``) parsed, no BOS added."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        """How many tokens the model's own tokenizer makes of plain ``text``."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text for chat ``messages``, from the GGUF's own chat template."""
        return str(self._formatter(messages=list(messages)).prompt)

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from kg_etl.llm.templates import chat_template_for

        template = chat_template_for(self._llm.metadata, self.chat_template, self.path.name)
        return Jinja2ChatFormatter(
            template,
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
        )

    def _token_text(self, token: int) -> str:
        return str(self._llm.detokenize([token], special=True).decode("utf-8", "replace"))

    # -- generation ----------------------------------------------------------------------------------------

    def evaluate_prefix(self, text: str) -> Prefix:
        """Evaluate ``text`` from an empty context and snapshot the state after it."""
        import llama_cpp

        tokens = self.tokenize(text)
        started = time.perf_counter()
        self._llm.reset()
        self._evals.clear()
        self._llm.eval(tokens)
        size = llama_cpp.llama_state_get_size(self._llm.ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(self._llm.ctx, buffer, size)
        self.stats.prompt_tokens += len(tokens)
        self.stats.seconds += time.perf_counter() - started
        return Prefix(tuple(tokens), bytes(buffer[:written]))

    def _restore(self, prefix: Prefix) -> None:
        import llama_cpp

        buffer = (ctypes.c_uint8 * len(prefix.state)).from_buffer_copy(prefix.state)
        if llama_cpp.llama_state_set_data(self._llm.ctx, buffer, len(prefix.state)) != len(prefix.state):
            raise ModelError(f"{self.path}: restoring the prompt state failed")
        n = len(prefix.tokens)
        self._llm.input_ids[:n] = prefix.tokens
        self._llm.n_tokens = n

    def complete(
        self,
        suffix: str,
        *,
        prefix: Prefix | None = None,
        grammar: Any = None,
        max_tokens: int = 512,
        sampling: Sampling | None = None,
    ) -> Completion:
        """Generate a reply to ``prefix`` + ``suffix``; only the suffix is evaluated when a prefix is given.

        Args:
            suffix: prompt text after the prefix (the whole prompt when ``prefix`` is None).
            prefix: an evaluated prefix from ``evaluate_prefix``; its state is restored first.
            grammar: a ``llama_cpp.LlamaGrammar`` that constrains the reply.
            max_tokens: generation budget; ``finish_reason == "length"`` when it ran out.
        """
        s = sampling or self.sampling
        suffix_tokens = self.tokenize(suffix)
        tokens = list(prefix.tokens if prefix else ()) + suffix_tokens
        if len(tokens) + max_tokens > self.n_ctx:
            raise ModelError(
                f"prompt of {len(tokens)} tokens + reply of {max_tokens} exceeds the "
                f"{self.n_ctx}-token context; use smaller chunks or a larger --n-ctx"
            )
        started = time.perf_counter()
        if prefix is not None:
            self._restore(prefix)
        else:
            self._llm.reset()
        self._evals.clear()
        result: Any = self._llm.create_completion(
            tokens,
            max_tokens=max_tokens,
            temperature=s.temperature,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            top_p=s.top_p,
            top_k=s.top_k,
            seed=s.seed,
            grammar=grammar,
        )
        choice = result["choices"][0]
        completion = Completion(
            text=choice["text"],
            finish_reason=choice["finish_reason"] or "stop",
            # generate() evaluates what it could not reuse in its first eval call, then one token at a time.
            prompt_tokens=self._evals[0] if self._evals else 0,
            completion_tokens=int(result["usage"]["completion_tokens"]),
            seconds=time.perf_counter() - started,
        )
        self.stats.add(completion)
        return completion

    def generate(
        self, requests: Sequence[GenRequest], sampling: Sampling | None = None, on_done: OnDone | None = None
    ) -> list[Completion]:
        """Complete each request in order, evaluating each distinct prefix once (one sequence at a time).

        ``on_done(index, completion)`` is called as each request finishes.
        """
        evaluated: dict[str, Prefix] = {}
        out = []
        for request in requests:
            n_prompt = len(self.tokenize(request.prefix)) + len(self.tokenize(request.suffix))
            if n_prompt + request.max_tokens > self.n_ctx:
                completion = too_long(n_prompt, request.max_tokens, self.n_ctx)
            else:
                prefix = evaluated.get(request.prefix)
                if prefix is None:
                    # Only the latest prefix is kept: callers group requests by chunk, and a snapshot is MBs.
                    evaluated = {request.prefix: self.evaluate_prefix(request.prefix)}
                    prefix = evaluated[request.prefix]
                grammar = _llama_grammar(request.grammar) if request.grammar else None
                completion = self.complete(
                    request.suffix, prefix=prefix, grammar=grammar, max_tokens=request.max_tokens, sampling=sampling
                )
            out.append(completion)
            if on_done is not None:
                on_done(len(out) - 1, completion)
        return out


@contextlib.contextmanager
def _extra_buffer_types(enabled: bool) -> Iterator[None]:
    """Load models with llama.cpp's extra buffer types (weight repacking, AMX) on or off.

    ``llama_cpp.Llama`` takes no such argument: it builds its model parameters from
    ``llama_model_default_params()``, so that function is wrapped for the duration of one load.
    """
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = enabled
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


@functools.lru_cache(maxsize=64)
def _llama_grammar(gbnf: str) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf, verbose=False)


def default_threads() -> int:
    """CPU threads for llama.cpp when ``--threads`` is not given: the cores that are idle now.

    llama.cpp's threads wait for each other at every operation of every token. On cores that another
    process also uses, a descheduled thread stalls the rest: measured on 2 cores with one other busy
    process, SmolLM2-135M generated 13.5 tokens/s with 2 threads against 28.7 with 1 (the 1.2B LFM2 shape:
    4.2 against 7.4), while on idle cores 2 threads beat 1 by 1.4-1.9x. So count the cores this process may
    use (affinity and cgroup quota) that were idle over the last quarter second, and use that many.
    """
    usable = _usable_cpus()
    idle = _idle_cpus(0.25)
    if idle is None:
        return usable
    # A core counts as idle from 75 % idle up: background noise must not cost a thread.
    return max(1, min(usable, int(idle + 0.25)))


def _usable_cpus() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:  # a container's CPU quota (cgroup v2): "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def _idle_cpus(window_s: float) -> float | None:
    """How many CPUs of the whole machine were idle over ``window_s`` (Linux /proc/stat), or None."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all jiffies, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(window_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (idle1 - idle0) / (total1 - total0) * (os.cpu_count() or 1)
