"""Models in worker processes, the placement probe and ``kg-etl doctor``, with real llama.cpp and real crashes.

The crash hooks (``kg_etl.faults``) make a worker or a probe die of a real SIGSEGV; the ingest-level crash
and resume tests are in ``test_resilience.py``, beside the uninterrupted run they compare with.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.config import IngestSettings
from kg_etl.errors import ModelError, WorkerCrashedError
from kg_etl.faults import FAULTS_ENV
from kg_etl.llm import placement
from kg_etl.llm.placement import has_amx, probe, resolve_placement
from kg_etl.llm.pool import ModelPool
from kg_etl.llm.protocol import SPLIT, ChatRequest, WorkerSpec, gen_request
from kg_etl.llm.runtime import LocalModel, Sampling, current_rss_mb, vram_used_mb
from kg_etl.llm.worker import ModelWorker

REQUESTS = [
    ChatRequest(
        (("system", "Answer briefly."), ("user", f"A river runs through the valley.{SPLIT} Part {i}:")), None, 12
    )
    for i in range(5)
]


def _spec(path: Path, parallel: int = 4) -> WorkerSpec:
    return WorkerSpec(str(path), 2048, 0, False, 1, Sampling.deterministic(), parallel, 2048, True)


# -- the worker ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [1, 4])
def test_a_worker_gives_the_replies_of_the_same_model_in_this_process(tiny_model_path: Path, parallel: int) -> None:
    with LocalModel(tiny_model_path, n_ctx=2048, n_threads=1, sampling=Sampling.deterministic()) as model:
        local = [c.text for c in model.generate([gen_request(model, r) for r in REQUESTS])]
    arrived: list[int] = []
    with ModelWorker(_spec(tiny_model_path, parallel)) as worker:
        remote = worker.generate(REQUESTS, on_done=lambda i, c: arrived.append(i))
        assert worker.info.pid != os.getpid() and psutil.pid_exists(worker.info.pid)
        assert worker.stats.calls == len(REQUESTS)
    assert [c.text for c in remote] == local
    assert sorted(arrived) == list(range(len(REQUESTS)))
    assert worker.closed and worker.peak_rss_mb and worker.peak_rss_mb > 0


def test_closing_a_worker_ends_its_process_and_this_process_keeps_no_model_memory(tiny_model_path: Path) -> None:
    before = current_rss_mb()
    pids = []
    for _ in range(3):  # one model after another, as the pool switches them
        with ModelWorker(_spec(tiny_model_path)) as worker:
            worker.generate(REQUESTS)
            pids.append(worker.pid)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)
    assert current_rss_mb() - before < 20, "the models' memory must live and die with their workers"
    assert vram_used_mb() is None  # a CPU build here: no VRAM to account for


def test_a_worker_that_segfaults_is_reported_with_its_signal(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "worker-crash-after=2")
    arrived: list[int] = []
    with ModelWorker(_spec(tiny_model_path, parallel=1)) as worker:
        with pytest.raises(WorkerCrashedError, match="SIGSEGV while generating") as caught:
            worker.generate(REQUESTS, on_done=lambda i, c: arrived.append(i))
        assert worker.closed
    assert arrived == [0, 1], "the replies sent before the crash were handed over"
    assert caught.value.model == tiny_model_path.name
    assert Path(caught.value.log).is_file() and "Fatal Python error" in Path(caught.value.log).read_text()


def test_a_model_llama_cpp_cannot_load_is_a_model_error_not_a_crash(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError, match="cannot load this model") as caught:
        ModelWorker(_spec(broken))
    assert not isinstance(caught.value, WorkerCrashedError)


def test_the_worker_leaves_ctrl_c_to_the_ingest_process(tiny_model_path: Path) -> None:
    with ModelWorker(_spec(tiny_model_path)) as worker:
        os.kill(worker.pid, signal.SIGINT)
        time.sleep(0.2)
        assert worker.alive and len(worker.generate(REQUESTS)) == len(REQUESTS)


def test_the_pool_ends_one_worker_before_it_starts_the_next(tmp_path: Path, tiny_model_path: Path) -> None:
    from kg_etl.testing import write_tiny_model

    other = write_tiny_model(tmp_path / "other.gguf", seed=3)
    pool = ModelPool(IngestSettings(model=str(tiny_model_path), threads=1, deterministic=True))
    try:
        first = pool.backend(str(tiny_model_path)).worker
        second = pool.backend(str(other)).worker
        assert first.closed and not second.closed and pool.resident == [str(other)]
    finally:
        pool.close()
    assert second.closed and pool.max_resident == 1
    assert all((use.worker_peak_rss_mb or 0) > 0 for use in pool.usage.values())


# -- the placement probe -------------------------------------------------------------------------------------


@pytest.fixture
def fresh_placement_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "placement.json"
    monkeypatch.setenv(placement.PLACEMENT_CACHE_ENV, str(path))
    return path


def test_the_probe_runs_once_per_machine_and_model(tiny_model_path: Path, fresh_placement_cache: Path) -> None:
    first = resolve_placement(tiny_model_path, "auto", n_gpu_layers=-1, threads=1)
    assert first.source == "probe"
    if not has_amx():  # the CPUs where llama.cpp's repacked kernels are known to work: the faster one won
        assert not first.crashed and (first.extra_bufts or "measured faster" in first.reason)
    again = resolve_placement(tiny_model_path, "auto", n_gpu_layers=-1, threads=1)
    assert again.source == "cache" and again.extra_bufts == first.extra_bufts
    entries = json.loads(fresh_placement_cache.read_text())["entries"]
    (entry,) = entries.values()
    assert entry["model"] == tiny_model_path.name and "CPU :" in entry["system_info"]
    assert fresh_placement_cache.stat().st_mode & 0o077 == 0


def test_both_placements_survive_the_probe_here(tiny_model_path: Path) -> None:
    plain = probe(tiny_model_path, extra_bufts=False, n_gpu_layers=-1, threads=1)
    repacked = probe(tiny_model_path, extra_bufts=True, n_gpu_layers=-1, threads=1)
    assert plain.ok, plain.detail
    assert repacked.ok or (has_amx() and repacked.crashed), repacked.detail


def test_a_probe_that_crashes_with_repacking_falls_back_to_plain_buffers(
    tiny_model_path: Path, fresh_placement_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "probe-crash-repack")
    chosen = resolve_placement(tiny_model_path, "auto", n_gpu_layers=-1, threads=1)
    assert not chosen.extra_bufts and chosen.source == "probe" and "SIGSEGV" in chosen.reason
    monkeypatch.delenv(FAULTS_ENV)  # remembered: not probed again, so the hook no longer matters
    assert resolve_placement(tiny_model_path, "auto", n_gpu_layers=-1, threads=1).source == "cache"


def test_cpu_repack_on_or_off_skips_the_probe(tiny_model_path: Path, fresh_placement_cache: Path) -> None:
    assert resolve_placement(tiny_model_path, "off", n_gpu_layers=-1, threads=1).extra_bufts is False
    assert resolve_placement(tiny_model_path, "on", n_gpu_layers=-1, threads=1).extra_bufts is True
    assert not fresh_placement_cache.exists()


# -- kg-etl doctor ---------------------------------------------------------------------------------------------


def test_doctor_on_this_machine(tiny_model_path: Path, graph_env: object) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--model", str(tiny_model_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    checks = {c["name"]: c for c in found["checks"]}
    assert found["ok"] and list(checks) == ["llama.cpp", "CPU", "model", "placement", "models", "graph", "home", "disk"]
    assert "AVX" in checks["llama.cpp"]["details"]["system_info"]
    assert checks["model"]["details"]["size"] == tiny_model_path.stat().st_size
    assert checks["placement"]["details"]["source"] in ("probe", "cache")
    assert "not Neo4j" in checks["graph"]["found"] and "compatible" in checks["graph"]["details"]["agent"]
    assert isinstance(checks["CPU"]["details"]["amx_tile"], bool)


def test_doctor_names_the_first_problem_in_one_line(tmp_path: Path, graph_env: object) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 3
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "missing.gguf: no such model file" in problems[0]
    assert "Traceback" not in result.output


def test_a_model_trained_on_a_short_context_gets_no_more_than_that(tmp_path: Path) -> None:
    """Past its trained context a model reads garbage: the worker's context is capped there, and says so."""
    from kg_etl.llm.pool import trained_context
    from kg_etl.testing import write_tiny_model

    short = write_tiny_model(tmp_path / "short.gguf", context_length=1024)
    notices: list[str] = []
    pool = ModelPool(IngestSettings(model=str(short), download=False, threads=1), notices.append)
    pool.sequence_context = lambda: 6000
    try:
        worker = pool.backend(str(short)).worker
        assert worker.spec.n_ctx == 1024 and worker.spec.n_ctx_per_seq == 1024
    finally:
        pool.close()
    assert any("trained on 1024 tokens" in notice for notice in notices)
    assert trained_context({"general.architecture": "llama", "llama.context_length": "8192"}) == 8192
    assert trained_context({"general.architecture": "llama"}) is None
