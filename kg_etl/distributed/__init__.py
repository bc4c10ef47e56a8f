"""Ingest on a Ray cluster (``kg-etl ingest --ray ADDRESS``): many GPUs or machines, one graph.

The same pipeline as one machine, driven by a different ``RunEngine``: models on Ray actors (one resident
model each, ``--ray-actors``, ``--ray-gpus-per-actor``), PDFs read and chunked in Ray tasks, several documents
at once, and one writer. Ray is an optional extra (``kg-etl[ray]``) and is imported only by a run that asks
for it.

    run.py     the engine, the lanes, the serial writer, ``ingest_on_ray`` and its report
    actors.py  the driver's side of the model actors: groups per model, parts, backpressure, restarts
    remote.py  what runs on the cluster's workers: the model actor, reading and chunking one PDF
"""

from __future__ import annotations

from kg_etl.distributed.actors import ActorUse
from kg_etl.distributed.run import RayEngine, RayIngestReport, RayOptions, ingest_on_ray, require_ray

__all__ = ["ActorUse", "RayEngine", "RayIngestReport", "RayOptions", "ingest_on_ray", "require_ray"]
