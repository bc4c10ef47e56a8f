"""The models manifest (gguf/models.toml): resolve a model name or path, list, and download with a checksum."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kg_etl.config import DEFAULT_MODEL, kg_etl_home
from kg_etl.errors import ConfigError, DownloadError, ModelNotFoundError
from kg_etl.models import sha256_file

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "download_dir",
    "find_model_file",
    "load_manifest",
    "manifest_path",
    "model_dirs",
    "pull_model",
    "resolve_model",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_ENV = "KG_ETL_MODELS_MANIFEST"


class ModelSpec(BaseModel):
    """One manifest entry: where a model lives on the hub and what its file must hash to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    repo: str
    file: str
    params: str
    size: int | None = None
    sha256: str | None = None


def manifest_path() -> Path:
    """The manifest: ``$KG_ETL_MODELS_MANIFEST`` or the repository's ``gguf/models.toml``."""
    return Path(os.environ.get(MANIFEST_ENV) or REPO_ROOT / "gguf" / "models.toml")


def load_manifest() -> dict[str, ModelSpec]:
    """All manifest entries by name."""
    path = manifest_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the models manifest ({e}); reinstall kg-etl") from e
    return {name: ModelSpec(name=name, **entry) for name, entry in data.get("models", {}).items()}


def model_dirs() -> list[Path]:
    """Folders searched for model files, in order: the repository's gguf/, then $KG_ETL_HOME/models."""
    return [REPO_ROOT / "gguf", kg_etl_home() / "models"]


def download_dir() -> Path:
    """Where a pull writes: gguf/ when writable (a clone), else $KG_ETL_HOME/models (an installed package)."""
    for folder in model_dirs():
        if folder.is_dir() and os.access(folder, os.W_OK):
            return folder
    folder = kg_etl_home() / "models"
    folder.mkdir(parents=True, exist_ok=True)
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
        raise ModelNotFoundError(
            f"{spec.name}: model file {spec.file} is not downloaded; "
            f"run `kg-etl models pull {spec.name}` or pass --model PATH.gguf"
        )
    try:
        return pull_model(spec)
    except DownloadError as e:
        raise ModelNotFoundError(f"{e}; or download {spec.repo}/{spec.file} yourself and pass --model PATH.gguf") from e


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
