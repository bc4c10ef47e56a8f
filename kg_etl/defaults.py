"""Every default of kg-etl, once: the settings objects, the command line and the starter config read them here.

Plain constants and no imports beyond the standard library, so the command line can show them in ``--help``
without loading pydantic, the graph driver or llama.cpp.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = [
    "BATCH_SIZE",
    "CHUNK_TOKENS",
    "CONFIG_ENV",
    "CONFIG_FILE",
    "CONNECT_TIMEOUT_S",
    "CPU_REPACK",
    "DEFAULT_CATEGORIES",
    "DEFAULT_MODEL",
    "EXPORT_KINDS",
    "EXTRACTOR_NAMES",
    "GPU_LAYERS",
    "HOME_ENV",
    "KNOWN_EXTRACTORS",
    "LLM_CONCURRENCY",
    "N_CTX",
    "OVERLAP_TOKENS",
    "PARALLEL",
    "PARALLEL_CPU",
    "READ_TIMEOUT_S",
    "RETRIES",
    "USER_SCHEMA",
    "VIEW_DEPTH",
    "VIEW_LIMIT",
    "VIEW_OUTPUT",
    "kg_etl_home",
    "private_dir",
]

HOME_ENV = "KG_ETL_HOME"
CONFIG_ENV = "KG_ETL_CONFIG"
CONFIG_FILE = "kg-etl.toml"  # looked for in the working directory

# Broad enough for most document collections, few enough for a small model to choose well from.
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "Science", "Technology", "Engineering", "Mathematics", "Medicine & Health", "Law & Regulation",
    "Government & Politics", "Business & Finance", "Economics", "Education", "History", "Arts & Culture",
    "Environment", "Society", "Other",
)  # fmt: skip

# Every extractor kg-etl runs by default, in order; "validate" is the second pass over the QA pairs. The
# registry (kg_etl.registry) defines them; their names are here too so that --help needs no heavy import,
# and the registry checks at import that both agree. The same for the export kinds, QA pairs first.
EXTRACTOR_NAMES = ("facts", "taxonomy", "categories", "keywords", "summary", "qa", "validate")
# The extractor of a user's own schema (--schema): it runs when a schema is given, not by default.
USER_SCHEMA = "schema"
KNOWN_EXTRACTORS = (*EXTRACTOR_NAMES, USER_SCHEMA)
EXPORT_KINDS = ("qa", "facts", "taxonomy", "keywords", "summaries", "schema")

# LFM2-1.2B at Q4_K_M: ~0.7 GB, good extraction quality for its size, fast on any recent GPU.
DEFAULT_MODEL = "lfm2-1.2b-q4_k_m"

BATCH_SIZE = 10  # chunks per graph transaction, as the user's MLImporting design wrote them
# Sequences decoded together in one llama.cpp context (1 = one at a time), when --parallel is not given.
# On a GPU decoding is memory-bound: N sequences cost little more than one, so 8 at once. On the CPU it
# is compute-bound: measured on 2 cores (1.2B shape) the whole LLM stage ran 1.06x faster with 8 than
# with 1, for (8 + 1) sequences' KV cache (SmolLM2-135M: peak memory 662 -> 1,976 MiB): so 1.
PARALLEL = 8
PARALLEL_CPU = 1
RETRIES = 2  # re-asks after a reply that does not fit its schema
# The most context one sequence may have. Each is sized to what it can need, the chunk, its instructions
# and the longest reply the chosen schemas admit (~7.4k tokens for LFM2 with every extractor), so a large
# bound costs no memory; it leaves room for tokenizers that cut text finer than LFM2's.
N_CTX = 16384
GPU_LAYERS = -1  # all layers on the GPU where the build can offload
CPU_REPACK: Literal["auto"] = "auto"  # probe once per machine and model (kg_etl.llm.placement)
READ_TIMEOUT_S = 120.0  # seconds of PDF parsing allowed per file
CHUNK_TOKENS = 512
OVERLAP_TOKENS = 64
CONNECT_TIMEOUT_S = 30.0  # keep retrying a graph database that is still starting
# Requests in flight at once to a model server (--llm): enough to keep a batching server (vLLM,
# llama-server with parallel slots) busy; a one-at-a-time server queues them at no cost.
LLM_CONCURRENCY = 4
# kg-etl view: hops from the start nodes, and the most nodes one page holds (a browser lays out ~2,000 in seconds).
VIEW_DEPTH = 1
VIEW_LIMIT = 1000
VIEW_OUTPUT = "graph.html"


def kg_etl_home() -> Path:
    """Where kg-etl keeps user state (local graph server, models, caches).

    ``KG_ETL_HOME`` relocates all of it, so tests point it at a temporary folder.
    """
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kg-etl"


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) and make kg-etl's home private if ``path`` is in it; return ``path``.

    User state holds text, facts and questions from private PDFs, and the graph's password: no other
    user of the machine may read it. A home folder that an older kg-etl made 0755 is tightened here.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    home = kg_etl_home()
    for folder in [path, *([home] if home in path.parents else [])]:
        try:
            if folder.stat().st_uid == os.getuid() and folder.stat().st_mode & 0o077:
                folder.chmod(0o700)
        except OSError:
            pass  # not ours to change: the folder works, it is just not private
    return path
