"""Hostile input and unlucky users, by class: each test covers the class a probe found, not only its example.

Real components: the CLI (CliRunner or a subprocess), the live Bolt server, real llama.cpp, real files,
FIFOs, devices and links. The read-only guarantees of ``kg-etl query`` are in ``test_query_guard.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import neo4j
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.defaults import kg_etl_home
from kg_etl.extract.cache import SqliteCache
from kg_etl.graph.queries import load_query
from kg_etl.samples import make_pdf

LINES = ["The river authority met in May.", "It approved the flood budget.", "Work starts in June."]
FAST = ["--extract", "summary", "--deterministic", "-q", "--chunk-tokens", "48", "--overlap-tokens", "4"]


def _ingest(folder: Path, model: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli, ["ingest", str(folder), "--model", str(model), *FAST, *extra])


def _documents(graph: neo4j.Driver) -> dict[str, dict[str, Any]]:
    records, _, _ = graph.execute_query("MATCH (d:Document) RETURN d.name AS name, d.status AS status, "
                                        "d.reason AS reason, d.path AS path")  # fmt: skip
    return {r["name"]: dict(r) for r in records}


# -- names and kinds of files ------------------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_ingested_and_named(
    tmp_path: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "good.pdf", [LINES])
    make_pdf(Path(os.fsdecode(os.fsencode(str(folder)) + b"/bad\xff.pdf")), [LINES[::-1]])
    first = _ingest(folder, tiny_model_path)
    assert first.exit_code == 0, first.output
    docs = _documents(graph)
    assert set(docs) == {"good.pdf", "bad\\xff.pdf"} and {d["status"] for d in docs.values()} == {"done"}
    again = _ingest(folder, tiny_model_path)
    assert again.exit_code == 0 and "2 already done" in again.stderr


def test_links_fifos_and_devices_named_pdf_are_each_one_line_and_the_rest_goes_on(
    tmp_path: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "good.pdf", [LINES])
    (folder / "loop.pdf").symlink_to(folder / "loop.pdf")
    (folder / "dangling.pdf").symlink_to(tmp_path / "gone.pdf")
    os.mkfifo(folder / "pipe.pdf")
    (folder / "zero.pdf").symlink_to("/dev/zero")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder)  # a folder loop: never walked into
    result = _ingest(folder, tiny_model_path, "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 1, result.output  # some documents failed; the good one is done
    why = {name: d["reason"] for name, d in _documents(graph).items()}
    assert why["good.pdf"] is None
    assert "symbolic link loop" in why["loop.pdf"] and "does not exist" in why["dangling.pdf"]
    assert "FIFO" in why["pipe.pdf"] and "character device" in why["zero.pdf"]
    for name in ("loop.pdf", "dangling.pdf", "pipe.pdf", "zero.pdf"):
        assert f"failed: {folder / name}" in result.stderr, f"{name} is not named in the summary"
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["documents"]) == 5


@pytest.mark.parametrize("kind", ["no text layer", "every page broken"])
def test_a_document_with_no_text_at_all_is_a_failure_with_a_reason(
    kind: str, tmp_path: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    if kind == "no text layer":
        make_pdf(folder / "scan.pdf", [[], []], image_pages={1, 2})
    else:
        make_pdf(folder / "scan.pdf", [[], []], broken_pages={1, 2})
    result = _ingest(folder, tiny_model_path)
    assert result.exit_code == 1, result.output
    doc = _documents(graph)["scan.pdf"]
    assert doc["status"] == "failed" and "no text in any of its 2 pages" in doc["reason"]
    records, _, _ = graph.execute_query(load_query("failed_documents").text)
    assert [Path(r["path"]).name for r in records] == ["scan.pdf"], "failed_documents.cypher shows it"


def test_the_values_of_a_filled_in_form_are_read_as_text(
    tmp_path: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "form.pdf", [[]], form_fields={1: [("Applicant", "Jane Doe"), ("City", "Lisbon")]})
    result = _ingest(folder, tiny_model_path)
    assert result.exit_code == 0, result.output
    records, _, _ = graph.execute_query("MATCH (c:Chunk) RETURN c.text AS text")
    assert "Applicant: Jane Doe" in records[0]["text"] and "City: Lisbon" in records[0]["text"]


# -- what "done" means -------------------------------------------------------------------------------------------


def test_done_covers_the_extractors_asked_for_and_a_later_run_does_the_rest(
    tmp_path: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "a.pdf", [LINES, LINES[::-1]])
    args = ["ingest", str(folder), "--model", str(tiny_model_path), "--deterministic", "-q"]
    args += ["--chunk-tokens", "48", "--overlap-tokens", "4"]
    assert CliRunner().invoke(cli, [*args, "--extract", "keywords"]).exit_code == 0
    records, _, _ = graph.execute_query("MATCH (s:Summary) RETURN count(s) AS n")
    assert records[0]["n"] == 0
    more = CliRunner().invoke(cli, [*args, "--extract", "keywords,summary", "--report", str(tmp_path / "r.json")])
    assert more.exit_code == 0, more.output
    assert "already done" not in more.stderr or "0 already done" in more.stderr
    records, _, _ = graph.execute_query("MATCH (s:Summary)-[:SUMMARIZES]->(:Chunk) RETURN count(s) AS n")
    assert records[0]["n"] > 0, "the summaries the first run did not make were made"
    report = json.loads((tmp_path / "r.json").read_text())
    keywords_calls = report["llm_calls"]
    again = CliRunner().invoke(cli, [*args, "--extract", "keywords", "--report", str(tmp_path / "r2.json")])
    assert again.exit_code == 0 and "1 already done" in again.stderr, "a subset of what is done is done"
    assert json.loads((tmp_path / "r2.json").read_text())["llm_calls"] == 0 < keywords_calls


# -- options checked before anything starts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--extract", ""], "--extract names no extractor"),
        (["--extract", ","], "--extract names no extractor"),
        (["--extract", "nosuch"], "unknown extractor(s) nosuch"),
        (["--categories", ","], "categories"),
        (["--n-ctx", "512", "--extract", "keywords"], "--n-ctx 512 is too small"),
        (["--report", "/nonexistent/r.json"], "/nonexistent does not exist"),
    ],
)
def test_bad_options_are_usage_errors_before_the_graph_server_starts(
    args: list[str], words: str, tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEO4J_URI", raising=False)
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--model", str(tiny_model_path), *args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert "graph server" not in result.output and not (kg_etl_home() / "graph").exists()


@pytest.mark.parametrize("name", ["report[/x]", "[bold]x", "a]b[c"])
def test_user_text_is_never_read_as_markup(name: str, graph_env: object) -> None:
    result = CliRunner().invoke(cli, ["remove", name])
    assert result.exit_code == 3 and name in result.stderr and "Traceback" not in result.output


# -- local state and files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other schema", "empty"])
def test_a_broken_cache_file_is_set_aside_and_rebuilt(damage: str, tmp_path: Path) -> None:
    path = tmp_path / "cache" / "extractions.sqlite"
    cache = SqliteCache(path)
    for i in range(200):
        cache.put(f"k{i}", json.dumps({"v": i}) * 20)
    cache.close()
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif damage == "other schema":
        path.unlink()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE extraction (k INTEGER)")
        db.commit()
        db.close()
    else:
        path.write_bytes(b"")
    notices: list[str] = []
    healed = SqliteCache(path, notify=notices.append)
    healed.put("new", "{}")
    assert healed.get("new") == "{}"
    assert damage == "empty" or (len(notices) == 1 and "set aside" in notices[0])
    healed.close()


def test_an_unusable_cache_entry_is_a_miss_and_is_asked_again(
    tmp_path: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "a.pdf", [LINES])
    assert _ingest(folder, tiny_model_path).exit_code == 0
    path = kg_etl_home() / "cache" / "extractions.sqlite"
    db = sqlite3.connect(path)
    db.execute('UPDATE extraction SET value = \'{"not": "a summary"}\'')
    db.commit()
    db.close()
    graph.execute_query("MATCH (n) DETACH DELETE n")
    result = _ingest(folder, tiny_model_path, "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["llm_calls"] > 0


def test_user_state_is_private(tmp_path: Path, tiny_model_path: Path, graph_env: object) -> None:
    home = kg_etl_home()
    home.chmod(0o755)  # as an older kg-etl left it
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "a.pdf", [LINES])
    assert _ingest(folder, tiny_model_path).exit_code == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in [home / "cache", home / "logs", *(home / "cache").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"


def test_a_full_disk_under_the_home_is_one_line_naming_the_path(tmp_path: Path) -> None:
    cache = SqliteCache(tmp_path / "c.sqlite")
    cache._db.execute("PRAGMA max_page_count = 1")  # SQLite's own "database or disk is full"
    from kg_etl.errors import StateError

    with pytest.raises(StateError, match=r"c\.sqlite: cannot write the extraction cache .*full"):
        cache.put("k", "x" * 100_000)


@pytest.mark.parametrize("target", ["char device", "fifo", "symlink", "folder"])
def test_export_writes_regular_files_only(target: str, tmp_path: Path, graph_env: object) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out.jsonl"
    if target == "char device":
        out = Path("/dev/null")
    elif target == "fifo":
        os.mkfifo(out)
    elif target == "symlink":
        out.symlink_to(victim)
    else:
        out.mkdir()
    result = CliRunner().invoke(cli, ["export", str(out), "--all"])
    if target == "folder":  # click's own check, before the graph is even opened
        assert result.exit_code == 2 and "is a directory" in result.output
        return
    assert result.exit_code == 3, result.output
    assert "regular files only" in result.stderr and "Traceback" not in result.output
    assert victim.read_text() == "keep me"
    if target == "char device":
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_link_planted_where_export_writes_its_temporary_file_is_not_followed(
    tmp_path: Path, graph_env: object
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for pid in range(os.getpid() - 50, os.getpid() + 50):  # the old fixed name, and guesses at the new one
        (tmp_path / f".out.jsonl.{pid}.part").symlink_to(victim)
    (tmp_path / "out.jsonl.part").symlink_to(victim)
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "out.jsonl"), "--all"])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep me" and (tmp_path / "out.jsonl").is_file()


def test_export_to_a_full_stdout_is_one_line(tmp_path: Path, tiny_model_path: Path, graph_env: Any) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "a.pdf", [LINES])
    assert _ingest(folder, tiny_model_path).exit_code == 0
    env = os.environ | {"KG_ETL_HOME": str(kg_etl_home())}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "kg_etl", "export", "-", "--kind", "summaries"], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "cannot write" in done.stderr


# -- connection settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri", ["foo://bar", "127.0.0.1:7687", "bolt://[::1", "bolt://127.0.0.1:abc", "bolt://alice:S3cret@[::1"]
)
def test_a_malformed_graph_uri_is_one_line_and_never_shows_a_password(uri: str) -> None:
    result = CliRunner().invoke(cli, ["stats"], env={"NEO4J_URI": uri, "NEO4J_PASSWORD": "pw-Zq81"})
    assert result.exit_code == 3, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "not a graph URI" in line and "Traceback" not in result.output
    assert "S3cret" not in result.output and "pw-Zq81" not in result.output


def test_credentials_in_the_uri_are_used_and_never_printed(graph_env: Any) -> None:
    host = graph_env.uri.split("://", 1)[1]
    uri = f"bolt://{graph_env.username}:{graph_env.password}@{host}"
    env = {"NEO4J_URI": uri, "NEO4J_PASSWORD": "", "NEO4J_USERNAME": "nobody"}
    result = CliRunner().invoke(cli, ["stats", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert graph_env.password not in result.output
    wrong = CliRunner().invoke(cli, ["stats"], env={"NEO4J_URI": f"bolt://{graph_env.username}:nope-8Kd@{host}"})
    assert wrong.exit_code == 3 and "nope-8Kd" not in wrong.output and "authentication failed" in wrong.stderr
