"""Where llama.cpp keeps a model's CPU weights: decided by a probe in a child process, remembered per machine.

llama.cpp repacks quantised CPU weights into "extra buffer types" at load: ``CPU_REPACK`` (interleaved
blocks for its AVX2/AVX-512/NEON kernels) and, in a native build on an Intel Xeon with AMX, ``AMX``. On such
CPUs the AMX kernel segfaults at the first decode (llama.cpp issue 20824, closed without a fix): the process
dies with no message. Turning the extra buffer types off (``use_extra_bufts = false``, llama-server's
``--no-repack``) avoids it, but also gives up the repacked kernels, so it is the fallback, not the default.

So before a model is first loaded on a machine, a child process loads it with repacking and decodes: a
prompt, a few tokens, and a batch of two sequences, timed. If the child dies by a signal, the plain
placement is probed the same way and used. If it survives, the plain placement is timed too, and the faster
one wins: repacking is not always faster (on a 2-core AVX2 EPYC, the 1.2B LFM2 shape at Q4_K_M evaluated
prompts 1.3x faster without it, and generated at the same speed). The outcome is kept in ``placement.json``
under ``KG_ETL_HOME`` (or ``KG_ETL_PLACEMENT_CACHE``), keyed by llama-cpp-python's version,
``llama_print_system_info()``, the model file and whether layers are offloaded, so each model is probed
once per machine and build.

``--cpu-repack on|off`` (``KG_ETL_CPU_REPACK``) skips the probe and forces one placement.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from kg_etl.defaults import kg_etl_home, private_dir
from kg_etl.errors import ConfigError, ModelError, StateError
from kg_etl.models import content_id

__all__ = [
    "CPU_REPACK_MODES",
    "CRASH_SIGNALS",
    "NO_AMX_BUILD",
    "PLACEMENT_CACHE_ENV",
    "CpuRepack",
    "Placement",
    "ProbeOutcome",
    "has_amx",
    "llama_cpp_version",
    "placement_cache_path",
    "probe",
    "resolve_placement",
    "system_info",
]

CpuRepack = Literal["auto", "on", "off"]
CPU_REPACK_MODES: tuple[str, ...] = get_args(CpuRepack)
PLACEMENT_CACHE_ENV = "KG_ETL_PLACEMENT_CACHE"
# Signals that mean native code crashed (as opposed to SIGKILL, which is the OOM killer or a user).
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT})
# A native build without llama.cpp's AMX kernels: -mno-amx-int8 wins over -march=native in GCC and clang,
# and without __AMX_INT8__ ggml compiles no AMX buffer type, while AVX-512 and CPU repacking stay.
NO_AMX_BUILD = (
    'CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8" '
    "pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36"
)
_PROBE_TIMEOUT_S = 900.0  # loading a multi-GB model from a slow disk, on a busy machine
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """How a model's CPU weights are placed, and how that was decided.

    ``extra_bufts``: llama.cpp's extra buffer types (weight repacking, AMX where built) on or off.
    ``source``: "option" (--cpu-repack on/off), "cache" (probed before), or "probe" (just now).
    ``reason``: why repacking is off, where it is; "" otherwise.
    ``crashed``: repacking is off because llama.cpp crashed with it (not merely because it was slower).
    """

    extra_bufts: bool
    source: str
    reason: str = ""
    crashed: bool = False

    @property
    def label(self) -> str:
        return "repacked" if self.extra_bufts else "plain (no repacking)"


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe child did: finished, failed with a message, or died by a signal."""

    ok: bool
    returncode: int
    seconds: float
    detail: str = ""
    work_seconds: float | None = field(default=None)  # the timed decoding

    @property
    def crashed(self) -> bool:
        """True when the child died of a signal that means a native crash."""
        return self.returncode < 0 and -self.returncode in {s.value for s in CRASH_SIGNALS}

    @property
    def signal_name(self) -> str:
        return signal.Signals(-self.returncode).name if self.returncode < 0 else ""


def llama_cpp_version() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


def system_info() -> str:
    """``llama_print_system_info()``: the CPU features this llama.cpp build uses (AVX2, AMX_INT8, ...)."""
    import llama_cpp

    return str(llama_cpp.llama_print_system_info().decode("utf-8", "replace")).strip()


def has_amx() -> bool:
    """Whether this build runs llama.cpp's AMX kernels (the ones that crash; see the module docstring)."""
    return "AMX_INT8 = 1" in system_info()


def placement_cache_path() -> Path:
    override = os.environ.get(PLACEMENT_CACHE_ENV)
    return Path(override).expanduser() if override else kg_etl_home() / "placement.json"


def resolve_placement(path: Path, mode: str, *, n_gpu_layers: int, threads: int) -> Placement:
    """The placement to load ``path`` with: forced by ``mode``, remembered, or found by probing now.

    Raises:
        ConfigError: ``mode`` is not auto, on or off.
        ModelError: the model crashes llama.cpp (or fails to load) in both placements.
    """
    if mode not in CPU_REPACK_MODES:
        raise ConfigError(f"--cpu-repack {mode!r}: choose auto, on or off")
    if mode != "auto":
        return Placement(extra_bufts=mode == "on", source="option", reason="" if mode == "on" else "--cpu-repack off")
    key = _key(path, n_gpu_layers)
    with _locked_cache() as entries:
        known = entries.get(key)
        if known is not None:
            return Placement(
                extra_bufts=bool(known["extra_bufts"]),
                source="cache",
                reason=str(known["reason"]),
                crashed=bool(known.get("crashed")),
            )
        placement = _probe_both(path, n_gpu_layers, threads)
        entries[key] = {
            "extra_bufts": placement.extra_bufts,
            "reason": placement.reason,
            "crashed": placement.crashed,
            "model": path.name,
            "llama_cpp": llama_cpp_version(),
            "system_info": system_info(),
            "offload": _offloads(n_gpu_layers),
            "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    return placement


def _probe_both(path: Path, n_gpu_layers: int, threads: int) -> Placement:
    repacked = probe(path, extra_bufts=True, n_gpu_layers=n_gpu_layers, threads=threads)
    if repacked.ok:
        return _faster(path, repacked, n_gpu_layers, threads)
    if not repacked.crashed:
        raise ModelError(f"{path}: llama.cpp cannot load this model ({repacked.detail})")
    plain = probe(path, extra_bufts=False, n_gpu_layers=n_gpu_layers, threads=threads)
    if not plain.ok:
        raise ModelError(
            f"{path}: llama.cpp crashes on this model with weight repacking ({repacked.signal_name}) and without "
            f"it ({plain.signal_name or plain.detail}); `kg-etl doctor --model {path}` shows the build"
        )
    amx = " (llama.cpp's AMX kernels; rebuild without them for full speed: " + NO_AMX_BUILD + ")" if has_amx() else ""
    reason = f"llama.cpp died of {repacked.signal_name} with CPU weight repacking on this machine{amx}"
    _LOG.info("%s: %s; using plain CPU buffers", path.name, reason)
    return Placement(extra_bufts=False, source="probe", reason=reason, crashed=True)


def _faster(path: Path, repacked: ProbeOutcome, n_gpu_layers: int, threads: int) -> Placement:
    """Both placements work: the plain one only where it measured clearly (5 %) faster, the noise of a probe."""
    plain = probe(path, extra_bufts=False, n_gpu_layers=n_gpu_layers, threads=threads)
    on, off = repacked.work_seconds, plain.work_seconds
    if plain.ok and on and off and off < on * 0.95:
        reason = f"plain CPU buffers measured faster here ({off:.2f} s against {on:.2f} s for the probe's decoding)"
        return Placement(extra_bufts=False, source="probe", reason=reason)
    return Placement(extra_bufts=True, source="probe")


def probe(path: Path, *, extra_bufts: bool, n_gpu_layers: int, threads: int) -> ProbeOutcome:
    """Load ``path`` in a child process with the given placement and decode a few tokens there."""
    command = [sys.executable, "-m", "kg_etl.llm.placement", str(path), "on" if extra_bufts else "off"]
    command += [str(n_gpu_layers), str(threads)]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise ModelError(
            f"{path}: the placement probe did not finish within {_PROBE_TIMEOUT_S:.0f} s; "
            "pass --cpu-repack on (or off) to skip it"
        ) from e
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    last = (lines or [""])[-1]
    work = None
    if done.returncode == 0:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            work = float(json.loads(last)["work_seconds"])
    return ProbeOutcome(done.returncode == 0, done.returncode, time.perf_counter() - started, last, work)


def _offloads(n_gpu_layers: int) -> bool:
    from kg_etl.llm.runtime import gpu_offload_supported

    return n_gpu_layers != 0 and gpu_offload_supported()


def _key(path: Path, n_gpu_layers: int) -> str:
    from kg_etl.llm.runtime import model_file_id

    return content_id(llama_cpp_version(), system_info(), model_file_id(path), str(_offloads(n_gpu_layers)))


@contextlib.contextmanager
def _locked_cache() -> Iterator[dict[str, Any]]:
    """The cache's entries, under an exclusive lock; written back (privately, atomically) when changed.

    The lock makes a second process wait for a probe in progress instead of running the same probe again.
    A cache that cannot be parsed is treated as empty: it only saves work.
    """
    path = placement_cache_path()
    private_dir(path.parent)
    lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = _read_entries(path)
        before = json.dumps(entries, sort_keys=True)
        yield entries
        if json.dumps(entries, sort_keys=True) != before:
            _write_private(path, json.dumps({"version": 1, "entries": entries}, indent=2, sort_keys=True))
    finally:
        os.close(lock)


def _read_entries(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["entries"]
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_private(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        partial.replace(path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise StateError(f"{path}: cannot save the placement probe's result ({e.strerror or e}); free space "
                         "there or move KG_ETL_HOME") from e  # fmt: skip


# -- the probe child -------------------------------------------------------------------------------------------


def _probe_main(path: str, repack: str, n_gpu_layers: str, threads: str) -> None:
    """Load the model as asked and decode, timed: a prompt, a few tokens, then two sequences at once.

    A short untimed decode first warms llama.cpp's buffers; the time is printed as JSON.
    """
    from kg_etl.faults import fault, segfault
    from kg_etl.llm.parallel import ParallelDecoder
    from kg_etl.llm.runtime import GenRequest, LocalModel, Sampling

    model = LocalModel(
        Path(path),
        n_ctx=1024,
        n_gpu_layers=int(n_gpu_layers),
        n_threads=int(threads),
        sampling=Sampling.deterministic(),
        cpu_repack=repack,
    )
    if repack == "on" and fault("probe-crash-repack") is not None:
        segfault()
    # Many prompt tokens for every few generated: kg-etl's work is mostly prompt evaluation.
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 6)
    requests = [GenRequest(prompt, " Next:", max_tokens=8), GenRequest(prompt, " Then:", max_tokens=8)]
    with ParallelDecoder(model, 2, n_ctx_per_seq=1024) as decoder:
        model.generate([GenRequest("Hi", " there", max_tokens=2)])
        started = time.perf_counter()
        model.generate(requests[:1])
        decoder.generate(requests)
        seconds = time.perf_counter() - started
    model.close()
    print(json.dumps({"probe": "ok", "model": Path(path).name, "repack": repack, "work_seconds": round(seconds, 4)}))


if __name__ == "__main__":
    _probe_main(*sys.argv[1:5])
