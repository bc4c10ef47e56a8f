"""The local graph server: ArcadeDB's Bolt endpoint as a background JVM, the no-Docker default.

Neo4j 5 cannot be installed from the package registries, so without Docker kg-etl speaks Bolt to
ArcadeDB (``pip install 'kg-etl[local]'``), which bundles its own JRE and answers as a Neo4j 5.26
compatible server. One server per root folder::

    <root>/server.json  ServerInfo of the running server (no secrets)
    <root>/password     the root password, generated once, mode 0600
    <root>/server.log   stdout and stderr of the latest start
    <root>/lock         serialises start and stop across processes
    <root>/data/        ArcadeDB's root path and working directory (databases, config, log/)

The server is only ever stopped through the PID it was started with, never by process name.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import neo4j
from neo4j.exceptions import AuthError, DriverError, Neo4jError
from pydantic import BaseModel, ConfigDict, ValidationError

from kg_etl.defaults import kg_etl_home, private_dir
from kg_etl.errors import GraphServerError
from kg_etl.graph.statements import PING

__all__ = [
    "COMMAND_TIMEOUT_S",
    "DATABASE",
    "READER",
    "USERNAME",
    "LocalGraphServer",
    "ServerInfo",
    "arcadedb_installed",
    "default_server",
]

DATABASE = "kg"
USERNAME = "root"
READER = "reader"  # may read records of the kg database, nothing else (see _write_groups)
LOOPBACK = "127.0.0.1"
COMMAND_TIMEOUT_S = 900  # the server ends any statement running longer: ingest's take well under a second

_MAIN_CLASS = "com.arcadedb.server.ArcadeDBServer"
_READY = "ArcadeDB Server started"
# A busy Bolt or HTTP port does not end the JVM: it logs one of these and keeps running.
_FAILURES = ("Error starting plugin", "Error on starting HTTP Server", 'Exception in thread "main"')
_NOTEWORTHY = ("SEVER", "Error", "Exception", "Caused by")
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+\s+(\[\w+\] )?(<[^>]*> )?")
_POLL_S = 0.2
_PROBE_TIMEOUT_S = 5.0
_KILL_WAIT_S = 5.0

# Children started by this process, so that a dead one is reaped (poll) instead of lingering as a
# zombie that still answers os.kill(pid, 0).
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


class ServerInfo(BaseModel):
    """Where a running local server listens; persisted as ``<root>/server.json``."""

    # Unknown keys are ignored: a server.json from a newer kg-etl must not read as stale, or a
    # second JVM would be started on the data dir that the running one holds.
    model_config = ConfigDict(frozen=True, extra="ignore")

    uri: str
    pid: int
    database: str
    username: str
    bolt_port: int
    http_port: int
    root: str
    # Started with the read-only user that `kg-etl query` connects as (servers from older kg-etl lack it).
    reader: bool = False


class LocalGraphServer:
    """Starts, finds and stops the ArcadeDB Bolt server that lives under one root folder."""

    def __init__(
        self,
        root: Path,
        *,
        heap_mb: int = 512,
        bolt_port: int | None = None,
        http_port: int | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """Describe a server; nothing starts until ``start()``.

        Args:
            root: folder for data, password, log and server.json (e.g. ``kg_etl_home() / "graph"``).
            heap_mb: the JVM's maximum heap in MiB.
            bolt_port: fixed loopback Bolt port; None picks a free one at each start.
            http_port: fixed loopback HTTP port (ArcadeDB's API); None picks a free one.
            die_with_parent: stop the server when the process that started it dies (Linux), as a test
                session's server must; a user's server outlives the command that started it.
        """
        # Absolute: the JVM runs with the data dir as cwd, and the PID check compares command lines.
        self.root = Path(root).expanduser().absolute()
        self.heap_mb = heap_mb
        self.bolt_port = bolt_port
        self.http_port = http_port
        self.die_with_parent = die_with_parent

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def info_path(self) -> Path:
        return self.root / "server.json"

    @property
    def password_path(self) -> Path:
        return self.root / "password"

    def start(self, timeout: float = 90.0) -> ServerInfo:
        """Return the running server, starting one when none answers.

        Raises:
            GraphServerError: ArcadeDB is not installed, the JVM died or logged a start-up error,
                it was not ready within ``timeout`` seconds, or a recorded server is alive but
                does not answer (stop it first: it may be busy and is not killed silently).
        """
        with self._locked():
            info = self._read_info()
            if info is not None and self._running(info.pid):
                if _answers(info, self.password()):
                    return info
                raise GraphServerError(
                    f"graph server pid {info.pid} under {self.root} is running but Bolt does not "
                    "answer: stop it (kg-etl graph stop) and start again"
                )
            self.info_path.unlink(missing_ok=True)
            return self._launch(timeout)

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the recorded server: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Returns:
            True when a server was running and is now gone, False when none was running.
        """
        with self._locked():
            info = self._read_info()
            if info is None:
                return False
            running = self._running(info.pid)
            if running:
                self._terminate(info.pid, timeout)
            self.info_path.unlink(missing_ok=True)
            return running

    def status(self) -> ServerInfo | None:
        """The running server, or None (a server.json whose process is gone is removed)."""
        info = self._read_info()
        if info is None:
            return None
        if not self._running(info.pid):
            self.info_path.unlink(missing_ok=True)
            return None
        # Alive but deaf: keep server.json so that stop() can still find it by its PID.
        return info if _answers(info, self.password()) else None

    def password(self) -> str:
        """The server's root password, generated on first use and kept in a 0600 file."""
        return self._secret(self.password_path)

    def _secret(self, path: Path) -> str:
        if not path.exists():
            self._ensure_root()
            _write_new_secret(path, secrets.token_urlsafe(24))
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        password = path.read_text(encoding="utf-8").strip()
        if not password:
            raise GraphServerError(f"{path} is empty: remove it and {self.data_dir} to start over")
        return password

    # -- starting ------------------------------------------------------------------------------

    @property
    def reader_password_path(self) -> Path:
        return self.root / "reader-password"

    def reader_password(self) -> str:
        """The read-only user's password (``READER``), generated on first use like root's; URL-safe, so it is
        also valid in ArcadeDB's ``defaultDatabases`` syntax, which splits on , : ; [ ]."""
        return self._secret(self.reader_password_path)

    def _launch(self, timeout: float) -> ServerInfo:
        java, jars = _arcadedb_paths()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _write_groups(self.data_dir / "config")
        bolt_port, http_port = self._ports()
        password = self.password()
        # Passwords go in an @argfile so that they never show in ps or /proc/PID/cmdline.
        argfile = self.root / ".server.args"
        argfile.unlink(missing_ok=True)
        users = f"{DATABASE}[{USERNAME},{READER}:{self.reader_password()}:{READER}]"
        _write_new_secret(
            argfile,
            f'"-Darcadedb.server.rootPassword={_argfile_quote(password)}"\n'
            f'"-Darcadedb.server.defaultDatabases={_argfile_quote(users)}"',
        )
        try:
            command = self._command(java, jars, argfile, bolt_port, http_port)
            proc = self._spawn(command)
            info = self._info(proc.pid, bolt_port, http_port)
            self._await_ready(proc, info, password, timeout)
        finally:
            argfile.unlink(missing_ok=True)
        _write_atomic(self.info_path, info.model_dump_json(indent=2))
        return info

    def _ports(self) -> tuple[int, int]:
        free = iter(_free_ports(2))
        return (self.bolt_port or next(free), self.http_port or next(free))

    def _command(self, java: Path, jars: Path, argfile: Path, bolt_port: int, http_port: int) -> list[str]:
        return [
            str(java),
            "-server",
            f"-Xms{min(64, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            f"@{argfile}",
            f"-Darcadedb.server.rootPath={self.data_dir}",
            "-Darcadedb.server.mode=development",
            f"-Darcadedb.server.httpIncomingHost={LOOPBACK}",
            f"-Darcadedb.server.httpIncomingPort={http_port}",
            "-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            f"-Darcadedb.bolt.host={LOOPBACK}",
            f"-Darcadedb.bolt.port={bolt_port}",
            # LOAD CSV can read any file the server can, or fetch URLs: kg-etl never uses it, so neither can anyone.
            "-Darcadedb.opencypher.loadCsv.allowFileUrls=false",
            "-Darcadedb.opencypher.loadCsv.allowRemoteUrls=false",
            # A statement the client gave up on (or a killed client's) would run on for ever: this ends it.
            f"-Darcadedb.command.timeout={COMMAND_TIMEOUT_S * 1000}",
            "-cp",
            str(jars / "*"),  # java expands the wildcard itself
            _MAIN_CLASS,
        ]

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        try:
            with open(self.log_path, "wb") as log:
                # cwd = data dir because ArcadeDB writes log/ into its working directory; a new
                # session keeps it alive after this process (and its terminal) goes away.
                proc = subprocess.Popen(
                    command,
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_terminate_with_parent if self.die_with_parent else None,
                )
        except OSError as e:
            raise GraphServerError(f"cannot run {command[0]}: {e}") from e
        _SPAWNED[proc.pid] = proc
        return proc

    def _info(self, pid: int, bolt_port: int, http_port: int) -> ServerInfo:
        return ServerInfo(
            reader=True,
            uri=f"bolt://{LOOPBACK}:{bolt_port}",
            pid=pid,
            database=DATABASE,
            username=USERNAME,
            bolt_port=bolt_port,
            http_port=http_port,
            root=str(self.root),
        )

    def _await_ready(self, proc: subprocess.Popen[bytes], info: ServerInfo, password: str, timeout: float) -> None:
        """Wait for the ready log line and a query on the kg database; kill the JVM on failure."""
        try:
            self._poll_ready(proc, info, password, time.monotonic() + timeout, timeout)
        except BaseException:
            self._terminate(proc.pid, _KILL_WAIT_S)
            raise

    def _poll_ready(
        self,
        proc: subprocess.Popen[bytes],
        info: ServerInfo,
        password: str,
        deadline: float,
        timeout: float,
    ) -> None:
        last_error = "no ready line in the log yet"
        while True:
            log = self._check_log(proc)
            # Bolt accepts connections before the default database exists: the log line comes first.
            if _READY in log:
                try:
                    _probe(info, password)
                    return
                except AuthError as e:
                    raise GraphServerError(self._auth_message()) from e
                except (DriverError, Neo4jError) as e:
                    last_error = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise GraphServerError(
                    f"graph server not ready within {timeout:.0f} s ({last_error}); see {self.log_path}"
                )
            time.sleep(_POLL_S)

    def _check_log(self, proc: subprocess.Popen[bytes]) -> str:
        """The log so far; raises when the JVM died or logged a start-up failure."""
        log = self.log_path.read_text(encoding="utf-8", errors="replace")
        if proc.poll() is not None:
            raise GraphServerError(
                f"graph server exited with code {proc.returncode}: {_summarise(log)} (log: {self.log_path})"
            )
        if any(marker in log for marker in _FAILURES):
            raise GraphServerError(f"graph server failed to start: {_summarise(log)} (log: {self.log_path})")
        return log

    def _auth_message(self) -> str:
        return (
            f"graph server under {self.root} rejects the password in {self.password_path} "
            f"(its data was created with another one): remove {self.data_dir} to start over"
        )

    # -- finding and stopping --------------------------------------------------------------------

    def _running(self, pid: int) -> bool:
        """True when ``pid`` is alive and is the ArcadeDB server of this root, not a reused PID."""
        if not _alive(pid):
            return False
        command = f" {_command_line(pid)} "
        return _MAIN_CLASS in command and f" -Darcadedb.server.rootPath={self.data_dir} " in command

    def _terminate(self, pid: int, timeout: float) -> None:
        _signal(pid, signal.SIGTERM)
        if self._wait_gone(pid, timeout):
            return
        _signal(pid, signal.SIGKILL)
        if not self._wait_gone(pid, _KILL_WAIT_S):
            raise GraphServerError(f"graph server pid {pid} survived SIGKILL")

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._running(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        child = _SPAWNED.pop(pid, None)
        if child is not None:
            # Its command line can read empty (exiting) a moment before waitpid() sees it: reap it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=_KILL_WAIT_S)
        return True

    def _read_info(self) -> ServerInfo | None:
        try:
            return ServerInfo.model_validate_json(self.info_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValidationError:
            # A torn or foreign file says nothing reliable about a server: treat it as stale.
            self.info_path.unlink(missing_ok=True)
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``<root>/lock`` so that two processes never start two servers on one data dir."""
        self._ensure_root()
        with open(self.root / "lock", "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _ensure_root(self) -> None:
        # 0700: the folder holds the password file.
        private_dir(self.root)


def default_server() -> LocalGraphServer:
    """The user's local server, under ``kg_etl_home() / "graph"``."""
    return LocalGraphServer(kg_etl_home() / "graph")


# -- helpers -------------------------------------------------------------------------------------


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def arcadedb_installed() -> bool:
    """Whether the local graph server can be started here (the ``local`` extra is installed)."""
    try:
        _arcadedb_paths()
    except GraphServerError:
        return False
    return True


def _arcadedb_paths() -> tuple[Path, Path]:
    """The bundled ``java`` and the jar folder of the arcadedb-embedded wheel."""
    spec = importlib.util.find_spec("arcadedb_embedded")
    if spec is None or spec.origin is None:
        raise GraphServerError(
            "the local graph server needs ArcadeDB: pip install 'kg-etl[local]' (or set NEO4J_URI to a Neo4j server)"
        )
    package = Path(spec.origin).parent
    java = package / "jre" / "bin" / "java"
    if not os.access(java, os.X_OK):
        raise GraphServerError(f"{java} is missing or not executable: pip install --force-reinstall 'kg-etl[local]'")
    return java, package / "jars"


def _free_ports(count: int) -> list[int]:
    """Free loopback ports, picked by the kernel (bind to port 0).

    The sockets stay open until all are picked so that the kernel cannot hand out one port twice;
    the short race until Java binds them is caught by the log watch.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _probe(info: ServerInfo, password: str) -> None:
    """Authenticate and run ``RETURN 1`` on the kg database; raises the driver's error."""
    auth = (info.username, password)
    with neo4j.GraphDatabase.driver(info.uri, auth=auth, connection_timeout=_PROBE_TIMEOUT_S) as driver:
        driver.verify_connectivity()
        # An auto-commit run is tried once; execute_query would retry for up to 30 s.
        with driver.session(database=info.database) as session:
            session.run(PING.text).consume()


def _answers(info: ServerInfo, password: str) -> bool:
    try:
        _probe(info, password)
    except (DriverError, Neo4jError):
        return False
    return True


def _alive(pid: int) -> bool:
    child = _SPAWNED.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: the command-line check rejects it
    return True


def _command_line(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces; '' when gone or a zombie."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return ""
        return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", errors="replace")
    # No procfs (macOS): ps prints the same, or nothing for a process that is gone.
    result = subprocess.run(
        ["ps", "-ww", "-o", "command=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _summarise(log: str, max_lines: int = 4) -> str:
    """One line from a start-up log: the first error and what follows, minus stack frames."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("at ", "..."))]
    first = next((i for i, line in enumerate(lines) if any(k in line for k in _NOTEWORTHY)), None)
    picked = lines[first : first + max_lines] if first is not None else lines[-max_lines:]
    summary = " | ".join(_LOG_PREFIX.sub("", line) for line in picked)
    return summary[:600] or "(empty log)"


# ArcadeDB's security groups: root's ``admin`` and the deny-all ``*`` it writes itself, plus ``reader`` on the
# kg database, which may read records and do nothing else: no creating, updating or deleting records, no
# schema, settings or security changes. The server checks these rights on every record and schema operation,
# whatever the language or the route (Cypher and SQL, Bolt and HTTP, procedures included).
_GROUPS = {
    "databases": {
        "*": {
            "groups": {
                "admin": {
                    "access": ["updateSecurity", "updateSchema", "updateDatabaseSettings"],
                    "resultSetLimit": -1,
                    "readTimeout": -1,
                    "types": {"*": {"access": ["createRecord", "readRecord", "updateRecord", "deleteRecord"]}},
                },
                "*": {"access": [], "resultSetLimit": -1, "readTimeout": -1, "types": {"*": {"access": []}}},
            }
        },
        DATABASE: {
            "groups": {
                READER: {
                    "access": [],
                    "resultSetLimit": -1,
                    "readTimeout": -1,
                    "types": {"*": {"access": ["readRecord"]}},
                }
            }
        },
    },
    "version": 2,
}


def _write_groups(config_dir: Path) -> None:
    """The security groups, before the server starts (it reads them at start and every few seconds)."""
    private_dir(config_dir)
    path = config_dir / "server-groups.json"
    fd = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(_GROUPS, f, indent=2)
    os.replace(path.with_name(path.name + ".tmp"), path)


def _write_new_secret(path: Path, text: str) -> None:
    """Write ``text`` to a new 0600 file; a concurrent writer of the same path wins, intact."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        # link() fails when the name exists, so readers see the whole file or none at all.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _argfile_quote(value: str) -> str:
    """Escape for a double-quoted token of a java @argfile."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
