"""The one exception tree of kg-etl.

Every error a user can cause or meet is a ``KgEtlError``; the CLI catches it once and prints
``str(error)`` as a single line, so each message names the thing at fault and what to do::

    KgEtlError
    ├── ConfigError            bad option, env var or config file value
    ├── ReadError              a PDF cannot be read at all (the run goes on with the next file)
    │   └── PasswordError      encrypted and no password given opens it
    ├── ModelError             a model file is missing, corrupt or cannot be loaded
    │   ├── ModelNotFoundError the chosen model is not on disk and may not be downloaded
    │   ├── DownloadError      a download or its checksum failed
    │   ├── GpuUnavailableError the GPU was asked for but this build cannot offload
    │   └── WorkerCrashedError a model's worker process died (a crash inside llama.cpp, or killed)
    ├── ExtractionError        a reply never fitted its schema within the retry budget
    ├── StateError             kg-etl's own files under KG_ETL_HOME cannot be written (disk full, permissions)
    └── GraphError             the graph database failed or refused a statement
        └── GraphServerError   the local graph server cannot be started, found or stopped
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DownloadError",
    "ExtractionError",
    "GpuUnavailableError",
    "GraphError",
    "GraphServerError",
    "KgEtlError",
    "ModelError",
    "ModelNotFoundError",
    "PasswordError",
    "ReadError",
    "StateError",
    "WorkerCrashedError",
]


class KgEtlError(Exception):
    """Root of every error kg-etl raises on purpose."""


class ConfigError(KgEtlError):
    """Raised when an option, environment variable or config value is invalid."""


class ReadError(KgEtlError):
    """Raised when a PDF cannot be opened or yields no pages at all."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class PasswordError(ReadError):
    """Raised when a PDF is encrypted and neither the empty nor a given password opens it."""


class ModelError(KgEtlError):
    """Raised when a model cannot be found, verified or loaded."""


class ModelNotFoundError(ModelError):
    """Raised when the chosen model is absent and downloading is not possible or not allowed."""


class DownloadError(ModelError):
    """Raised when a model download fails (offline, hub error) or its checksum does not match."""


class GpuUnavailableError(ModelError):
    """Raised when GPU offload was requested but llama-cpp-python was built without it."""


class WorkerCrashedError(ModelError):
    """Raised when a model's worker process dies while it loads or generates.

    A crash inside llama.cpp (a segfault) kills only that process; this error names the model, how it died
    and its log, and ``during`` adds what the run was doing, so the one line says what was lost and how to go on.
    """

    def __init__(self, model: str, how: str, log: str, doing: str = "") -> None:
        self.model, self.how, self.log, self.doing = model, how, log, doing
        during = f" while {doing}" if doing else ""
        super().__init__(
            f"{model}: the llama.cpp worker died of {how}{during}; nothing of that batch was written and the "
            f"replies received before it are cached: rerun the same command to resume. If it happens again, "
            f"`kg-etl doctor --model {model}` checks this machine, and --cpu-repack off avoids llama.cpp's "
            f"repacked CPU kernels (worker log: {log})"
        )

    def during(self, doing: str) -> WorkerCrashedError:
        """The same crash, told with what the run was doing when it happened."""
        return WorkerCrashedError(self.model, self.how, self.log, doing)


class ExtractionError(KgEtlError):
    """Raised when a model reply never validates; carries the last raw reply and attempt count."""

    def __init__(self, message: str, raw: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts


class StateError(KgEtlError):
    """Raised when kg-etl's own state (cache, logs, probe results) cannot be written: a full disk, permissions."""


class GraphError(KgEtlError):
    """Raised when the graph database is unreachable or rejects a statement."""


class GraphServerError(GraphError):
    """Raised when the local graph server cannot be started, found or stopped."""
