"""Settings: small value objects built from options, environment variables and defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["DEFAULT_CATEGORIES", "DEFAULT_MODEL", "EXTRACTOR_NAMES", "HOME_ENV", "IngestSettings", "kg_etl_home"]

HOME_ENV = "KG_ETL_HOME"
# Broad enough for most document collections, few enough for a small model to choose well from.
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "Science", "Technology", "Engineering", "Mathematics", "Medicine & Health", "Law & Regulation",
    "Government & Politics", "Business & Finance", "Economics", "Education", "History", "Arts & Culture",
    "Environment", "Society", "Other",
)  # fmt: skip

# Every extractor kg-etl runs by default, in order; "validate" is the second pass over the QA pairs.
EXTRACTOR_NAMES = ("facts", "taxonomy", "categories", "keywords", "summary", "qa", "validate")

# LFM2-1.2B at Q4_K_M: ~0.7 GB, good extraction quality for its size, fast on any recent GPU.
DEFAULT_MODEL = "lfm2-1.2b-q4_k_m"


def kg_etl_home() -> Path:
    """Where kg-etl keeps user state (local graph server, models, caches).

    ``KG_ETL_HOME`` relocates all of it, so tests point it at a temporary folder.
    """
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kg-etl"


class IngestSettings(BaseModel):
    """What ``kg-etl ingest`` does, beyond which files and which graph."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default=DEFAULT_MODEL, description="manifest name or path of a .gguf file")
    download: bool = Field(default=True, description="pull a named model that is not on disk")
    batch_size: int = Field(default=10, ge=1, le=1000, description="chunks per graph transaction")
    # Sequences decoded together in one llama.cpp context (1 = one at a time). Measured on 2 AVX-only cores
    # (1.2B shape): generation steps ~1.7x the tokens/s of one sequence, the whole LLM stage ~1.1x (prompt
    # evaluation, which batching cannot shorten, dominates there); decoding on a GPU is memory-bound and
    # gains more. The KV cache is (8 + 1) x n_ctx cells: ~0.85 GiB for 1.2B at 8k.
    parallel: int = Field(default=8, ge=1, le=64, description="sequences decoded together")
    extractors: tuple[str, ...] = EXTRACTOR_NAMES
    # An extractor may run on a model of its own (QA validation on LFM2-700M, say): the run then takes one
    # model at a time, each over every document, and closes it before loading the next.
    extractor_models: dict[str, str] = Field(
        default_factory=dict, description="extractor name -> model (manifest name or .gguf path); others use model"
    )
    keep_models_loaded: bool = Field(
        default=False, description="keep every model of the run resident at once (needs the memory for all)"
    )
    categories: tuple[str, ...] = Field(
        default=DEFAULT_CATEGORIES, min_length=1, description="the label set chunks and documents are classified into"
    )
    retries: int = Field(default=2, ge=0, le=10, description="re-asks after an invalid reply")
    # 8k tokens: a ~500-token chunk and its instructions, plus the longest reply any schema admits.
    n_ctx: int = Field(default=8192, ge=512)
    gpu_layers: int = Field(default=-1, ge=-1, description="-1 = all layers on the GPU, 0 = CPU only")
    require_gpu: bool = False
    threads: int | None = Field(default=None, ge=1, description="CPU threads for llama.cpp; None = the idle cores")
    # "auto": probe once per machine and model whether llama.cpp survives its repacked CPU weights (its AMX
    # kernels crash on Intel Xeons), and fall back to plain buffers if not (kg_etl.llm.placement).
    cpu_repack: Literal["auto", "on", "off"] = Field(default="auto", description="CPU weight repacking")
    deterministic: bool = Field(default=False, description="greedy decoding (temperature 0)")
    read_timeout: float = Field(default=120.0, gt=0)
    # On by default: most failures (a timeout on a busy machine, a graph that was down, a password given
    # since) are fixed by trying again, and a file that is really broken fails again in milliseconds.
    retry_failed: bool = True
    password: SecretStr | None = None
    passwords: dict[str, str] = Field(default_factory=dict, description="file name or glob -> PDF password")
    chunk_tokens: int | None = Field(default=None, ge=32)
    overlap_tokens: int | None = Field(default=None, ge=0)

    @field_validator("extractor_models")
    @classmethod
    def _known_extractors(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(EXTRACTOR_NAMES))
        if unknown:
            raise ValueError(f"unknown extractor(s) {', '.join(unknown)}; choose from {','.join(EXTRACTOR_NAMES)}")
        return value

    def model_for(self, extractor: str) -> str:
        """The model an extractor runs on: its own where one is set, else the run's model."""
        return self.extractor_models.get(extractor, self.model)
