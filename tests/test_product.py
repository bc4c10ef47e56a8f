"""What a new user meets: the config file and its precedence, presets, queries with parameters, the offline
message, chunks as ingest cuts them, progress, the local server's notice, and files in the package.

Through the real command line (CliRunner or a subprocess), the live Bolt server and real llama.cpp.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import neo4j
import psutil
import pytest
from click.testing import CliRunner

from kg_etl import pipeline
from kg_etl.cli import cli
from kg_etl.defaults import BATCH_SIZE, DEFAULT_CATEGORIES, N_CTX
from kg_etl.graph.queries import installed_queries, parse_param
from kg_etl.samples import make_pdf

LINES = ["The river authority met in May.", "It approved the flood budget.", "Work starts in June."]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    make_pdf(pdfs / "minutes.pdf", [LINES, LINES[::-1]], title="Minutes")
    return pdfs


def _invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


# -- the config file ------------------------------------------------------------------------------------------


def test_init_writes_a_starter_that_is_valid_and_at_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _invoke("init").exit_code == 0
    text = (tmp_path / "kg-etl.toml").read_text()
    assert _invoke("init").exit_code == 3, "an existing file is never overwritten without --force"
    uncommented = re.sub(r"(?m)^# (\w+ = )", r"\1", text)  # every option, set to its default
    parsed = tomllib.loads(uncommented)
    assert parsed["ingest"]["batch"] == BATCH_SIZE and parsed["ingest"]["categories"] == list(DEFAULT_CATEGORIES)
    assert "parallel" not in parsed["ingest"], "an option with no default is described, not set"
    (tmp_path / "kg-etl.toml").write_text(uncommented)
    shown = json.loads(_invoke("config", "show", "--json").stdout)
    sources = {row["option"]: row["source"] for row in shown["options"]}
    assert sources["--batch"] == "config file" and shown["config"] == "kg-etl.toml"


def test_option_beats_environment_beats_config_file_beats_default(
    tmp_path: Path, tiny_model_path: Path, folder: Path, graph_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mine.toml"
    config.write_text(
        f'[ingest]\nmodel = "{tiny_model_path}"\nparallel = 3\nbatch = 7\nretries = 1\n'
        'categories = ["Law", "Finance"]\nmodel_for = { validate = "' + str(tiny_model_path) + '" }\n'
        '[passwords]\n"secret*.pdf" = "hunter2"\n'
    )
    seen: list[Any] = []

    def capture(inputs: Any, graph: Any, settings: Any, **kwargs: Any) -> Any:
        seen.append(settings)
        return kwargs["report"]

    monkeypatch.setattr(pipeline, "ingest", capture)
    env = {"KG_ETL_CONFIG": str(config), "KG_ETL_PARALLEL": "2"}
    result = _invoke("ingest", str(folder), "--batch", "5", env=env)
    assert result.exit_code == 0, result.output
    (s,) = seen
    assert (s.batch_size, s.parallel, s.retries) == (5, 2, 1)  # option, environment, file
    assert s.n_ctx == N_CTX and s.categories == ("Law", "Finance")  # default, file
    assert s.extractor_models == {"validate": str(tiny_model_path)} and s.passwords == {"secret*.pdf": "hunter2"}

    shown = json.loads(
        _invoke("--config", str(config), "config", "show", "--json", env={"KG_ETL_PARALLEL": "2"}).stdout
    )
    by_option = {row["option"]: row for row in shown["options"]}
    assert by_option["--parallel"]["source"] == "environment KG_ETL_PARALLEL"
    assert by_option["--batch"]["source"] == "config file" and by_option["--n-ctx"]["source"] == "default"
    assert by_option["--retries"]["value"] == 1 and shown["passwords"] == {"secret*.pdf": "***"}
    assert "hunter2" not in json.dumps(shown)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[ingest]\nbatchsize = 3\n", "[ingest] has no key 'batchsize'"),
        ("[nosuch]\nx = 1\n", "unknown section [nosuch]"),
        ("batch = 3\n", "must be in a section"),
        ("[ingest\n", "not valid TOML"),
        ("[graph]\nhost = 'x'\n", "[graph] has no key 'host'"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_it(tmp_path: Path, text: str, words: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = _invoke("--config", str(config), "config", "show")
    assert result.exit_code == 3 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(config) in line and words in line


def test_a_pdf_password_from_the_config_file_opens_the_pdf(
    tmp_path: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    pdfs = tmp_path / "locked"
    pdfs.mkdir()
    make_pdf(pdfs / "secret-1.pdf", [LINES], password="hunter2")
    config = tmp_path / "kg.toml"
    config.write_text('[passwords]\n"secret-*.pdf" = "hunter2"\n')
    args = ["--config", str(config), "ingest", str(pdfs), "--model", str(tiny_model_path), "--extract", "summary"]
    result = _invoke(*args, "--deterministic", "-q")
    assert result.exit_code == 0, result.output
    records, _, _ = graph.execute_query("MATCH (d:Document) RETURN d.status AS status")
    assert [r["status"] for r in records] == ["done"]


# -- presets and models ---------------------------------------------------------------------------------------------


def test_a_preset_names_models_and_the_users_own_choices_win(
    folder: Path, tiny_model_path: Path, graph_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(pipeline, "ingest", lambda *a, **k: seen.append(a[2]) or k["report"])
    monkeypatch.setattr("kg_etl.pipeline.resolve_model", lambda ref, download=True: tiny_model_path)
    assert _invoke("ingest", str(folder), "--preset", "balanced").exit_code == 0
    assert seen[0].model == "lfm2.5-1.2b-instruct-q4_k_m"
    assert seen[0].model_for("facts") == "lfm2-1.2b-extract-q4_k_m"
    assert seen[0].model_for("validate") == "lfm2-1.2b-rag-q4_k_m"
    args = ["ingest", str(folder), "--preset", "balanced", "--model", "mine", "--model-for", "validate=judge"]
    assert _invoke(*args).exit_code == 0
    assert seen[1].model == "mine" and seen[1].model_for("validate") == "judge"
    assert seen[1].model_for("facts") == "lfm2-1.2b-extract-q4_k_m"


def test_every_preset_model_is_in_the_manifest_with_its_sampling() -> None:
    from kg_etl.llm.presets import PRESETS
    from kg_etl.llm.registry import load_manifest

    manifest = load_manifest()
    for preset in PRESETS.values():
        for ref in {preset.model, *preset.extractor_models.values()}:
            assert ref in manifest, f"preset {preset.name}: {ref} is not in gguf/models.toml"
    assert manifest["lfm2-1.2b-extract-q4_k_m"].sampling_settings().temperature == 0.0
    assert manifest["lfm2.5-350m-q4_k_m"].sampling_settings().top_k == 50
    assert manifest["lfm2-1.2b-q4_k_m"].sampling_settings().min_p == 0.15


def test_models_list_shows_whole_sources_at_any_width() -> None:
    result = CliRunner().invoke(cli, ["models", "list"], terminal_width=80)
    assert result.exit_code == 0
    assert "https://huggingface.co/LiquidAI/LFM2-1.2B-Extract-GGUF/resolve/main/LFM2-1.2B-Extract-Q8_0.gguf" in (
        result.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    )
    assert "…" not in result.stdout


def test_a_missing_model_offline_says_how_to_get_it_before_anything_starts(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("NEO4J_URI", raising=False)
    for extra in ([], ["--no-download"]):
        result = _invoke("ingest", str(folder), "--model", "lfm2-1.2b-q4_k_m", *extra)
        assert result.exit_code == 3, result.output
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert "kg-etl models pull lfm2-1.2b-q4_k_m" in line and "resolve/main/LFM2-1.2B-Q4_K_M.gguf" in line
        assert str(tmp_path) in line or "models" in line  # the folder it would go into
        assert "graph server" not in result.output, "the model is checked before the graph server starts"


# -- queries ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("n=3", 3), ("x=0.5", 0.5), ("b=true", True), ("z=null", None), ("s='a b'", "a b"), ('s="q"', "q"),
     ("l=[1, 2]", [1, 2]), ('m={"k": 1}', {"k": 1}), ("e=World Health Organization", "World Health Organization"),
     ("$p=x", "x")],
)  # fmt: skip
def test_parameters_are_typed_as_browser_types_them(text: str, value: Any) -> None:
    assert parse_param(text)[1] == value


def test_every_installed_query_runs_from_the_command_line_with_its_example_parameters(graph_env: object) -> None:
    queries = installed_queries()
    assert len(queries) == 17
    for query in queries:
        params = [arg for name, example in query.parameters.items() for arg in ("-p", f"{name}={example}")]
        result = _invoke("query", "--file", query.name, *params, "--json")
        assert result.exit_code == 0, f"{query.name}: {result.output}"
    missing = _invoke("query", "--file", "entity_facts")
    assert missing.exit_code == 2 and "entity_facts needs entity" in missing.output
    assert "-p entity='World Health Organization'" in missing.output


def test_query_list_names_each_query_with_its_parameters() -> None:
    result = CliRunner().invoke(cli, ["query", "--list"], terminal_width=200)
    assert result.exit_code == 0
    assert "page_questions" in result.stdout and "validated_only" in result.stdout


# -- chunks, progress, the local server ------------------------------------------------------------------------------


def test_chunks_cuts_a_pdf_exactly_as_ingest_does(
    folder: Path, tiny_model_path: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    args = ["--chunk-tokens", "32", "--overlap-tokens", "4", "--model", str(tiny_model_path)]
    printed = _invoke("chunks", str(folder / "minutes.pdf"), *args)
    assert printed.exit_code == 0, printed.output
    ids = [json.loads(line)["id"] for line in printed.stdout.splitlines()]
    assert len(ids) > 1
    result = _invoke("ingest", str(folder), *args, "--extract", "summary", "--deterministic", "-q")
    assert result.exit_code == 0, result.output
    records, _, _ = graph.execute_query("MATCH (c:Chunk) RETURN c.id AS id ORDER BY c.index")
    assert [r["id"] for r in records] == ids


def test_progress_tells_the_stage_and_moves_with_every_reply(
    folder: Path, tiny_model_path: Path, graph_env: Any
) -> None:
    from pydantic import SecretStr

    from kg_etl.config import IngestSettings
    from kg_etl.graph.connection import Graph, GraphSettings

    events: list[pipeline.Event] = []
    settings = IngestSettings(model=str(tiny_model_path), deterministic=True, threads=1, batch_size=2,
                              chunk_tokens=32, overlap_tokens=4)  # fmt: skip
    conn = GraphSettings(uri=graph_env.uri, username=graph_env.username, password=SecretStr(graph_env.password),
                         database=graph_env.database)  # fmt: skip
    with Graph(conn) as g:
        assert pipeline.ingest([folder], g, settings, on_event=events.append).ok
    progress = [e for e in events if e.kind == "progress"]
    stages = {e.message.split(":")[0] for e in progress}
    assert {"validation", "document summary"} <= stages
    assert any("facts" in stage and "qa" in stage for stage in stages)
    pages = [e.done for e in progress if e.done is not None]
    assert pages == sorted(pages) and len(set(pages)) > 2, "the pages bar moves within a batch"


def test_the_local_server_is_announced_once_and_graph_stop_leaves_no_process(
    folder: Path, tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEO4J_URI", raising=False)
    home = tmp_path / "home"
    env = os.environ | {"KG_ETL_HOME": str(home), "KG_ETL_THREADS": "1"}
    env.pop("NEO4J_URI", None)
    command = [sys.executable, "-m", "kg_etl", "ingest", str(folder), "--model", str(tiny_model_path), "-q",
               "--extract", "summary", "--deterministic"]  # fmt: skip
    try:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        assert first.stderr.count("keeps running") == 1 and "kg-etl graph stop" in first.stderr
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert "keeps running" not in again.stderr, "said once: by the command that started it"
        pid = json.loads((home / "graph" / "server.json").read_text())["pid"]
    finally:
        stop = subprocess.run(
            [sys.executable, "-m", "kg_etl", "graph", "stop"], env=env, capture_output=True, text=True
        )
    assert stop.stdout.strip() == "stopped"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
