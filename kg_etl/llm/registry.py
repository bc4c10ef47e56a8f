"""The models manifest (gguf/models.toml): resolve a model name or path, list, and download with a checksum."""

from __future__ import annotations

import os
import tomllib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg_etl.defaults import DEFAULT_MODEL, kg_etl_home, private_dir
from kg_etl.errors import ConfigError, DownloadError, ModelNotFoundError
from kg_etl.llm.runtime import Sampling
from kg_etl.models import sha256_file

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "clone_models_dir",
    "download_dir",
    "find_model_file",
    "load_manifest",
    "manifest_path",
    "model_dirs",
    "pull_model",
    "resolve_model",
    "spec_for",
]

MANIFEST_ENV = "KG_ETL_MODELS_MANIFEST"
MODELS_DIR_ENV = "KG_ETL_MODELS_DIR"


class ModelSpec(BaseModel):
    """One manifest entry: where a model lives on the hub, what its file must hash to, how to sample it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    repo: str
    file: str
    params: str
    size: int | None = None
    sha256: str | None = None
    task: Literal["general", "extract", "rag"] = "general"
    sampling: str = Field(default="lfm2", description="the name of a [sampling.NAME] profile of the manifest")
    sampling_params: dict[str, float] = Field(default_factory=dict, description="that profile's values")

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.file}"

    @property
    def sampling_label(self) -> str:
        values = self.sampling_params
        if values.get("temperature") == 0:
            return "greedy"
        return " ".join(f"{k}={v:g}" for k, v in values.items())

    def sampling_settings(self) -> Sampling:
        """LiquidAI's recommended sampling for this model, as the runtime takes it."""
        return Sampling.model_validate(self.sampling_params)


def manifest_path() -> Traversable:
    """The manifest: ``$KG_ETL_MODELS_MANIFEST``, or the one in the package (a copy of gguf/models.toml)."""
    override = os.environ.get(MANIFEST_ENV)
    return Path(override) if override else files("kg_etl") / "models.toml"


def load_manifest() -> dict[str, ModelSpec]:
    """All manifest entries by name, each with its sampling profile resolved."""
    path = manifest_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        profiles = data.get("sampling", {})
        specs = {}
        for name, entry in data.get("models", {}).items():
            profile = entry.get("sampling", "lfm2")
            specs[name] = ModelSpec(name=name, sampling_params=profiles[profile], **entry)
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValidationError) as e:
        raise ConfigError(f"{path}: cannot read the models manifest ({e}); reinstall kg-etl") from e
    return specs


def spec_for(ref: str) -> ModelSpec | None:
    """The manifest entry a ``--model`` value means: by name, or by the file name of a .gguf path."""
    manifest = load_manifest()
    by_name = manifest.get(ref.lower())
    if by_name is not None:
        return by_name
    name = Path(ref).name
    return next((spec for spec in manifest.values() if spec.file == name), None)


def clone_models_dir() -> Path | None:
    """A source checkout's gguf/ folder, where kg-etl runs from one; None for an installed package.

    Only a checkout has it: in an installed package, the folder next to ``kg_etl`` is site-packages, whose
    ``gguf`` is the gguf library, and model files must never be written into an installation.
    """
    root = Path(__file__).resolve().parents[2]
    manifest = root / "gguf" / "models.toml"
    if manifest.is_file() and (root / "pyproject.toml").is_file() and (root / "kg_etl" / "cli.py").is_file():
        return root / "gguf"
    return None


def model_dirs() -> list[Path]:
    """Folders searched for model files, in order: $KG_ETL_MODELS_DIR or a checkout's gguf/, then
    $KG_ETL_HOME/models."""
    first = os.environ.get(MODELS_DIR_ENV)
    dirs = [Path(first).expanduser()] if first else [d for d in (clone_models_dir(),) if d is not None]
    return [*dirs, kg_etl_home() / "models"]


def download_dir() -> Path:
    """Where a pull writes: $KG_ETL_MODELS_DIR, else a checkout's gguf/ when writable, else $KG_ETL_HOME/models."""
    first = os.environ.get(MODELS_DIR_ENV)
    if first:
        folder = Path(first).expanduser()
    else:
        clone = clone_models_dir()
        folder = clone if clone is not None and os.access(clone, os.W_OK) else kg_etl_home() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    if kg_etl_home() in folder.parents:
        private_dir(folder)
    return folder


def find_model_file(spec: ModelSpec) -> Path | None:
    """The model's file if it is on disk in one of ``model_dirs()``."""
    for folder in model_dirs():
        candidate = folder / spec.file
        if candidate.is_file():
            return candidate
    return None


def resolve_model(name_or_path: str, *, download: bool = True) -> Path:
    """Turn ``--model`` into a file on disk, downloading a named model when it is absent and allowed.

    Raises:
        ModelNotFoundError: unknown name, missing path, or absent with downloading not possible.
    """
    as_path = Path(name_or_path).expanduser()
    if as_path.suffix == ".gguf" or os.sep in name_or_path:
        if as_path.is_file():
            return as_path
        raise ModelNotFoundError(
            f"{name_or_path}: no such model file; give a .gguf path or a name from `kg-etl models list`"
        )
    manifest = load_manifest()
    spec = manifest.get(name_or_path.lower())
    if spec is None:
        known = ", ".join(sorted(manifest))
        raise ModelNotFoundError(f"{name_or_path}: unknown model; known names: {known}")
    found = find_model_file(spec)
    if found is not None:
        return found
    if not download:
        raise ModelNotFoundError(f"{spec.name} is not downloaded (--no-download); {_how_to_get(spec)}")
    try:
        return pull_model(spec)
    except DownloadError as e:
        raise ModelNotFoundError(f"{e}; {_how_to_get(spec)}") from e


def _how_to_get(spec: ModelSpec) -> str:
    return (
        f"run `kg-etl models pull {spec.name}` where the hub is reachable, or download {spec.url} into "
        f"{download_dir()} (or pass --model PATH.gguf)"
    )


def pull_model(spec: ModelSpec) -> Path:
    """Download a model from the Hugging Face hub into ``download_dir()`` and verify its sha256.

    Raises:
        DownloadError: offline, hub error, or checksum mismatch (the bad file is removed).
    """
    # Imported here: huggingface_hub pulls in an HTTP stack that no other command needs.
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    target = download_dir()
    try:
        expected = spec.sha256 or get_hf_file_metadata(hf_hub_url(spec.repo, spec.file)).etag
        path = Path(hf_hub_download(spec.repo, spec.file, local_dir=target))
    # The hub client raises many unrelated types (HTTP, offline, validation); all mean "no download".
    except Exception as e:
        raise DownloadError(
            f"{spec.name}: cannot download {spec.repo}/{spec.file} ({type(e).__name__}: {_first_line(e)})"
        ) from e
    _verify(path, spec, expected)
    return path


def _verify(path: Path, spec: ModelSpec, expected: str | None) -> None:
    expected = (expected or "").strip('"').lower()
    if len(expected) != 64:
        # The hub's etag is the LFS sha256 only for LFS files; without one there is nothing to check against.
        return
    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{spec.name}: checksum mismatch for {path.name} (got {actual[:12]}..., "
            f"expected {expected[:12]}...); the file was removed, pull again"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else "no details"
