"""``kg-etl doctor``: is this machine ready for an ingest? Each check says what it found; the first problem leads.

Nothing here changes state, except that the placement probe (``kg_etl.llm.placement``) runs if this model was
never probed on this machine, and remembers its outcome as an ingest would.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from kg_etl.config import kg_etl_home
from kg_etl.errors import KgEtlError

__all__ = ["Check", "DoctorReport", "diagnose"]

_MIN_FREE_BYTES = 2 << 30  # room for a model download, the cache and the local graph


class Check(BaseModel):
    """One thing looked at: what was found and, where it stops an ingest, the problem in one line."""

    name: str
    found: str
    problem: str | None = None
    details: dict[str, object] = Field(default_factory=dict)


class DoctorReport(BaseModel):
    checks: list[Check] = Field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [c.problem for c in self.checks if c.problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def diagnose(
    model: str, graph_uri: str | None, graph_auth: tuple[str, str | None], database: str | None
) -> DoctorReport:
    """Run every check, in the order an ingest needs them."""
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("llama.cpp", _llama_cpp),
        ("CPU", _cpu),
        ("model", lambda: _model(model)),
        ("placement", lambda: _placement(model)),
        ("models", _models_present),
        ("graph", lambda: _graph(graph_uri, graph_auth, database)),
        ("home", _home),
        ("disk", _disk),
    ]
    return DoctorReport(checks=[_safely(name, check) for name, check in checks])


def _safely(name: str, check: Callable[[], Check]) -> Check:
    """The check's finding, or its error as the problem: one failing check must not hide the others."""
    try:
        return check()
    except KgEtlError as e:
        return Check(name=name, found="failed", problem=str(e))


def _llama_cpp() -> Check:
    from kg_etl.llm.placement import NO_AMX_BUILD, has_amx, llama_cpp_version, system_info
    from kg_etl.llm.runtime import gpu_offload_supported

    offload = gpu_offload_supported()
    details: dict[str, object] = {"version": llama_cpp_version(), "system_info": system_info(), "gpu_offload": offload}
    found = f"llama-cpp-python {llama_cpp_version()}, {'GPU offload' if offload else 'CPU only'}: {system_info()}"
    if has_amx():  # kept from crashing by the probe, but slower than a build without the AMX kernels
        found += f"; this build has llama.cpp's AMX kernels, which crash: for full CPU speed, {NO_AMX_BUILD}"
    if offload:
        from kg_etl.llm.runtime import gpu_devices

        gpus = gpu_devices()
        details["gpus"] = gpus
        found += "; " + ("; ".join(gpus) or "no CUDA device visible to nvidia-smi")
    return Check(name="llama.cpp", found=found, details=details)


def _cpu() -> Check:
    from kg_etl.llm.runtime import default_threads

    model_name, flags = "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model_name == "unknown":
                model_name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    has = {flag: flag in flags for flag in ("avx2", "avx512f", "amx_tile")}
    threads = default_threads()
    marks = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in has.items())
    found = f"{model_name} ({os.cpu_count()} CPUs; {marks}); default threads now: {threads}"
    return Check(name="CPU", found=found, details={"model": model_name, **has, "default_threads": threads})


def _model(ref: str) -> Check:
    from kg_etl.llm.registry import load_manifest, resolve_model
    from kg_etl.models import sha256_file

    path = resolve_model(ref, download=False)
    spec = load_manifest().get(ref.lower())
    digest = sha256_file(path)
    details: dict[str, object] = {"path": str(path), "size": path.stat().st_size, "sha256": digest}
    if spec is not None and spec.sha256 and spec.sha256 != digest:
        return Check(
            name="model",
            found=f"{path} (sha256 {digest[:12]}...)",
            problem=f"{path}: sha256 {digest[:12]}... is not the manifest's {spec.sha256[:12]}...; "
            f"run `kg-etl models pull {spec.name}` again",
            details=details,
        )
    return Check(
        name="model", found=f"{path}, {path.stat().st_size / 1e6:.0f} MB, sha256 {digest[:12]}...", details=details
    )


def _placement(ref: str) -> Check:
    from kg_etl.llm.placement import placement_cache_path, resolve_placement
    from kg_etl.llm.registry import resolve_model
    from kg_etl.llm.runtime import default_threads

    path = resolve_model(ref, download=False)
    mode = os.environ.get("KG_ETL_CPU_REPACK", "auto")
    placement = resolve_placement(path, mode, n_gpu_layers=-1, threads=default_threads())
    how = {"option": f"forced by --cpu-repack {mode}", "cache": "probed before", "probe": "probed now"}[
        placement.source
    ]
    found = f"CPU weights {placement.label} ({how}; {placement_cache_path()})"
    if placement.reason:
        found += f": {placement.reason}"
    details = {"extra_bufts": placement.extra_bufts, "source": placement.source, "reason": placement.reason}
    return Check(name="placement", found=found, details=details)


def _models_present() -> Check:
    from kg_etl.llm.registry import find_model_file, load_manifest

    present = {name: str(path) for name, spec in sorted(load_manifest().items()) if (path := find_model_file(spec))}
    found = ", ".join(present) if present else "none downloaded (kg-etl models pull NAME)"
    return Check(name="models", found=found, details={"present": present})


def _graph(uri: str | None, auth: tuple[str, str | None], database: str | None) -> Check:
    from kg_etl.graph.connection import Graph, GraphSettings
    from kg_etl.graph.server import default_server

    username, password = auth
    if not uri:
        server = default_server()
        info = server.status()
        if info is None:
            from kg_etl.graph.server import arcadedb_installed

            problem = (
                None
                if arcadedb_installed()
                else ("no NEO4J_URI and no local graph server: pip install 'kg-etl[local]' or set NEO4J_URI")
            )
            return Check(name="graph", found="local server not running (ingest starts it)", problem=problem)
        uri, username, password, database = info.uri, info.username, server.password(), info.database
    if password is None:
        return Check(name="graph", found=uri, problem=f"{uri}: NEO4J_URI is set but NEO4J_PASSWORD is not")
    settings = GraphSettings(uri=uri, username=username, password=SecretStr(password), database=database)
    with Graph(settings) as graph:
        graph.wait_ready(5.0)
        agent = graph.server_agent()
        kind = "Neo4j" if graph.is_neo4j() else "not Neo4j: a Bolt-compatible server such as kg-etl's local one"
    return Check(name="graph", found=f"{uri}: {kind}, {agent}", details={"uri": uri, "agent": agent})


def _home() -> Check:
    home = kg_etl_home()
    if not home.exists():
        return Check(name="home", found=f"{home} (not created yet; the first run creates it)")
    mode = stat.S_IMODE(home.stat().st_mode)
    found = f"{home} (mode {mode:o})"
    if not os.access(home, os.W_OK | os.X_OK):
        return Check(name="home", found=found, problem=f"{home}: not writable by this user; fix its permissions")
    if mode & 0o077:
        found += ": readable by other users; `chmod 700` keeps extracted text private"
    return Check(name="home", found=found, details={"path": str(home), "mode": f"{mode:o}"})


def _disk() -> Check:
    home = kg_etl_home()
    where = next((p for p in (home, *home.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free
    found = f"{free / 2**30:.1f} GiB free at {where}"
    problem = (
        f"{where}: only {free / 2**30:.1f} GiB free; kg-etl needs 2 GiB or more" if free < _MIN_FREE_BYTES else None
    )
    return Check(name="disk", found=found, problem=problem, details={"free_bytes": free})
