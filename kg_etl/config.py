"""Settings: small value objects built from options, environment variables, the config file and defaults.

The defaults themselves live in ``kg_etl.defaults``, so the command line shows the same ones.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from kg_etl import defaults as d
from kg_etl.defaults import DEFAULT_CATEGORIES, DEFAULT_MODEL, EXTRACTOR_NAMES, HOME_ENV, KNOWN_EXTRACTORS, kg_etl_home
from kg_etl.errors import ConfigError

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_MODEL",
    "EXTRACTOR_NAMES",
    "HOME_ENV",
    "ConfigFile",
    "IngestSettings",
    "kg_etl_home",
    "read_config",
]


class IngestSettings(BaseModel):
    """What ``kg-etl ingest`` does, beyond which files and which graph."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default=DEFAULT_MODEL, description="manifest name or path of a .gguf file")
    download: bool = Field(default=True, description="pull a named model that is not on disk")
    batch_size: int = Field(default=d.BATCH_SIZE, ge=1, le=1000, description="chunks per graph transaction")
    parallel: int | None = Field(
        default=None, ge=1, le=64, description="sequences decoded together; None: 8 on a GPU, 1 on the CPU"
    )
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
    llm_url: str | None = Field(
        default=None, description="an OpenAI-compatible server (llama-server, vLLM, Ollama's /v1) instead of a GGUF"
    )
    llm_model: str | None = Field(default=None, description="the server's model; None: the first it lists")
    llm_api_key: SecretStr | None = Field(default=None, description="the server's API key, if it wants one")
    llm_concurrency: int = Field(default=d.LLM_CONCURRENCY, ge=1, le=256, description="requests in flight at once")
    user_schema: str | None = Field(
        default=None, description="the user's own schema: a TOML file, a shipped example's name, or module:NAME"
    )
    retries: int = Field(default=d.RETRIES, ge=0, le=10, description="re-asks after an invalid reply")
    n_ctx: int = Field(default=d.N_CTX, ge=512)
    gpu_layers: int = Field(default=d.GPU_LAYERS, ge=-1, description="-1 = all layers on the GPU, 0 = CPU only")
    require_gpu: bool = False
    threads: int | None = Field(default=None, ge=1, description="CPU threads for llama.cpp; None = the idle cores")
    # "auto": probe once per machine and model whether llama.cpp survives its repacked CPU weights (its AMX
    # kernels crash on Intel Xeons), and fall back to plain buffers if not (kg_etl.llm.placement).
    cpu_repack: Literal["auto", "on", "off"] = Field(default=d.CPU_REPACK, description="CPU weight repacking")
    deterministic: bool = Field(default=False, description="greedy decoding (temperature 0)")
    chat_template: str | None = Field(
        default=None, description="a built-in template name or a Jinja file; None: the GGUF's own, else its family's"
    )
    read_timeout: float = Field(default=d.READ_TIMEOUT_S, gt=0)
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
        unknown = sorted(set(value) - set(KNOWN_EXTRACTORS))
        if unknown:
            raise ValueError(f"unknown extractor(s) {', '.join(unknown)}; choose from {','.join(KNOWN_EXTRACTORS)}")
        return value

    @model_validator(mode="after")
    def _one_kind_of_model(self) -> IngestSettings:
        if self.llm_url is not None and self.extractor_models:
            raise ValueError("--llm runs every extractor on the server's model; drop --model-for (or --llm)")
        return self

    def extractor_names(self) -> tuple[str, ...]:
        """The extractors of the run: those asked for, and the user schema's extractor when a schema is given."""
        if self.user_schema is not None and d.USER_SCHEMA not in self.extractors:
            return (*self.extractors, d.USER_SCHEMA)
        return self.extractors

    def model_for(self, extractor: str) -> str:
        """The model an extractor runs on: its own where one is set, else the run's model."""
        return self.extractor_models.get(extractor, self.model)


@dataclass(frozen=True)
class ConfigFile:
    """A ``kg-etl.toml``: option values by section (``graph``, ``ingest``, ``export``...), and PDF passwords."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)


def read_config(path: Path) -> ConfigFile:
    """Read a config file; which keys each section may hold is the command line's to check.

    Raises:
        ConfigError: the file cannot be read or parsed, a section is not a table, or a password is not a string.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e}); fix --config / KG_ETL_CONFIG") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); `kg-etl init` writes a correct starter") from e
    not_tables = [key for key, value in data.items() if not isinstance(value, dict)]
    if not_tables:
        raise ConfigError(f"{path}: {not_tables[0]!r} must be in a section, e.g. [ingest]; see `kg-etl init`")
    passwords = data.pop("passwords", {})
    bad = [key for key, value in passwords.items() if not isinstance(value, str)]
    if bad:
        raise ConfigError(f'{path}: [passwords] {bad[0]!r} is not "file name or glob" = "password"; quote the value')
    return ConfigFile(sections=data, passwords=dict(passwords))
