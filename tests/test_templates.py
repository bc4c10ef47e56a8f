"""Chat templates: the GGUF's own, a named or filed one, or the architecture's; never llama-2 in silence."""

from __future__ import annotations

from pathlib import Path

import neo4j
import pytest
from click.testing import CliRunner
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from kg_etl.cli import cli
from kg_etl.errors import ModelError
from kg_etl.llm.templates import BUILT_IN, chat_template_for
from kg_etl.samples import make_pdf
from kg_etl.testing import write_tiny_model

MESSAGES = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Name the river."}]


def _render(name: str) -> str:
    return str(Jinja2ChatFormatter(BUILT_IN[name], eos_token="</s>", bos_token="<bos>")(messages=MESSAGES).prompt)


def test_gemma_has_no_system_role_so_the_system_prompt_opens_the_first_user_turn() -> None:
    assert _render("gemma") == (
        "<bos><start_of_turn>user\nBe exact.\n\nName the river.<end_of_turn>\n<start_of_turn>model\n"
    )
    assert "system" not in _render("gemma")


def test_chatml_and_lfm2_keep_their_roles() -> None:
    assert _render("chatml").startswith("<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\n")
    assert _render("lfm2").startswith("<bos><|im_start|>system\n")


def test_the_template_comes_from_the_option_then_the_file_then_the_architecture(tmp_path: Path) -> None:
    own = {"tokenizer.chat_template": "OWN", "general.architecture": "gemma3"}
    assert chat_template_for(own, None, "m.gguf") == "OWN"
    assert chat_template_for(own, "chatml", "m.gguf") == BUILT_IN["chatml"]
    assert chat_template_for({"general.architecture": "gemma3"}, None, "m.gguf") == BUILT_IN["gemma"]
    custom = tmp_path / "t.jinja"
    custom.write_text("{{ messages[0]['content'] }}")
    assert chat_template_for({}, str(custom), "m.gguf") == custom.read_text()
    with pytest.raises(ModelError, match=r"m\.gguf: the GGUF has no chat template .* architecture .mamba."):
        chat_template_for({"general.architecture": "mamba"}, None, "m.gguf")


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LFM2 GGUF without tokenizer.chat_template, as some conversions leave it."""
    return write_tiny_model(tmp_path_factory.mktemp("bare") / "bare-lfm2.gguf", chat_template=False)


def _ingest(folder: Path, model: Path, *extra: str) -> object:
    args = ["ingest", str(folder), "--model", str(model), "--extract", "summary", "--deterministic", "-q", *extra]
    return CliRunner().invoke(cli, args)


def test_a_gguf_without_a_template_uses_its_architectures_or_the_one_named(
    tmp_path: Path, bare_model: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    make_pdf(tmp_path / "a.pdf", [["The river authority met in May."]])
    first = _ingest(tmp_path, bare_model)
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    graph.execute_query("MATCH (n) DETACH DELETE n")
    named = _ingest(tmp_path, bare_model, "--chat-template", "chatml")
    assert named.exit_code == 0, named.output  # type: ignore[attr-defined]


def test_a_template_that_does_not_exist_is_a_usage_error_before_any_claim(
    tmp_path: Path, bare_model: Path, graph_env: object, graph: neo4j.Driver
) -> None:
    make_pdf(tmp_path / "a.pdf", [["The river authority met in May."]])
    result = _ingest(tmp_path, bare_model, "--chat-template", "nosuch")
    assert result.exit_code == 2 and "--chat-template nosuch" in result.output  # type: ignore[attr-defined]
    assert graph.execute_query("MATCH (d:Document) RETURN count(d) AS n").records[0]["n"] == 0
