"""Extractors, retries, validation and the document summary: on the real tiny model, and on a scripted model.

The tiny random-weight LFM2 (real llama.cpp, greedy) checks what only the real stack can show: every reply
the grammar lets through fits its schema, prefix-state reuse changes no output, a closed model fails
cleanly. Its replies are noise, so content and orchestration (results per chunk, verdicts, map-reduce,
cache, selection) are checked against ``ScriptedChat``, a LangChain chat model with canned replies.
"""

from __future__ import annotations

import json
import re
import stat
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import psutil
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg_etl.errors import ConfigError, ExtractionError, GpuUnavailableError, ModelError
from kg_etl.extract.base import Backend, Extractor, Job, OnReply, Reply
from kg_etl.extract.cache import SqliteCache
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import FACTS
from kg_etl.extract.keywords import KEYWORDS, Keywords
from kg_etl.extract.qa import QAPair, QAPairs
from kg_etl.extract.run import BatchExtractor, DocumentSummary
from kg_etl.extract.summary import Summary
from kg_etl.extract.validate import (
    EVIDENCE_THRESHOLD,
    Judgement,
    Validations,
    evidence_score,
    judge,
    token_f1,
    validation_task,
)
from kg_etl.llm import runtime
from kg_etl.llm.backend import LangChainBackend, LlamaBackend
from kg_etl.llm.grammar import STORED_MAY_BE_NULL, llama_grammar, parse_reply
from kg_etl.llm.langchain import ChatLocalLFM2
from kg_etl.llm.prompt import chunk_messages
from kg_etl.llm.runtime import (
    GenRequest,
    LocalModel,
    Sampling,
    gpu_offload_supported,
    peak_rss_mb,
    vram_used_mb,
)
from kg_etl.models import Chunk, content_id
from kg_etl.pipeline import ALL_EXTRACTORS
from kg_etl.registry import ExtractOptions, select_extractors

LABELS = ("Hydrology", "Space flight", "Contract law")  # a custom label set, not the defaults
SOURCE = "report.pdf"

TEXTS = (
    "The Hollins Ferry plant released nitrate into the river in July 2024. Three of the twelve stations "
    "exceeded the legal limit of 50 mg/l after heavy rain.",
    "The Rosetta spacecraft reached comet 67P in August 2014. Its lander Philae touched down in November "
    "on the surface of the comet after a seven-hour descent.",
    "The court ruled in 2019 that the supply contract was void because it was never signed. The appeal "
    "was dismissed a year later by the higher court.",
)
TOPICS = ("Nitrate", "Rosetta", "Contract")


def make_chunk(index: int, text: str | None = None) -> Chunk:
    text = TEXTS[index] if text is None else text
    return Chunk(
        id=content_id("doc", index, text),
        doc_id="doc",
        index=index,
        text=text,
        page_start=index + 1,
        page_end=index + 1,
        char_start=0,
        char_end=len(text),
        n_tokens=len(text) // 4,
    )


def all_extractors() -> list[Extractor]:
    """Every extractor, the validation pass last."""
    return select_extractors(ALL_EXTRACTORS, ExtractOptions(categories=LABELS))


def chunk_extractors() -> list[Extractor]:
    """Every extractor that reads its chunk alone: all but the validation pass."""
    return [e for e in all_extractors() if e.follow is None]


def assert_fits(result: BaseModel, schema: type[BaseModel]) -> None:
    """``result`` is a ``schema`` whose JSON meets every bound of the schema's JSON Schema."""
    assert isinstance(result, schema)
    # jsonschema checks maxLength/maxItems/enum/minimum on its own, independently of pydantic's parsing.
    jsonschema.validate(result.model_dump(mode="json"), stored_schema(schema.model_json_schema()))


def stored_schema(node: Any) -> Any:
    """A reply schema as stored results meet it: a ``never_null`` field that a validator dropped is null."""
    if isinstance(node, list):
        return [stored_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: stored_schema(value) for key, value in node.items()}
    if node.pop(STORED_MAY_BE_NULL, False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


# ================================================================ the tiny real model


class Injecting:
    """A backend wrapper: ``bad(job)`` may answer a job itself (an invalid reply); other jobs go to ``inner``."""

    def __init__(self, inner: Backend, bad: Callable[[Job], Reply | None]) -> None:
        self.inner = inner
        self.bad = bad
        self.rounds: list[list[Job]] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        self.rounds.append(list(jobs))
        injected = [self.bad(job) for job in jobs]
        real = iter(self.inner.run([job for job, reply in zip(jobs, injected, strict=True) if reply is None]))
        return [reply if reply is not None else next(real) for reply in injected]


def first_time(schema: type[BaseModel], reply: Reply) -> Callable[[Job], Reply | None]:
    """Answer the first job for ``schema`` with ``reply``, and leave every later job to the model."""
    done: list[bool] = []

    def bad(job: Job) -> Reply | None:
        if job.schema is schema and not done:
            done.append(True)
            return reply
        return None

    return bad


TRUNCATED = Reply(text='{"keywords": [{"term": "nitr', finish_reason="length")
TOO_MANY = Reply(text=json.dumps({"keywords": [{"term": f"term {i}", "relevance": 0.5} for i in range(9)]}))


@pytest.fixture(scope="module")
def tiny_run(tiny_model_path: Path) -> tuple[list[Extractor], list[Any]]:
    """Every extractor and the QA validation over two chunks, on the tiny model."""
    extractors = all_extractors()
    with LocalModel(tiny_model_path, n_ctx=8192, n_threads=1, sampling=Sampling.deterministic()) as model:
        outs = BatchExtractor(LlamaBackend(model), extractors).run([make_chunk(0), make_chunk(1)], SOURCE)
    return [e for e in extractors if e.follow is None], outs


@pytest.mark.parametrize("name", ["facts", "taxonomy", "categories", "keywords", "summary", "qa"])
def test_each_extractor_gives_schema_valid_bounded_output(name: str, tiny_run: tuple[list[Extractor], Any]) -> None:
    extractors, outs = tiny_run
    extractor = next(e for e in extractors if e.name == name)
    for out in outs:
        assert out.failures == []
        assert_fits(out.results[name], extractor.schema)
        if name == "categories":
            assert set(out.results[name].labels) <= set(LABELS)


def test_validation_gives_a_verdict_per_qa_pair_on_the_tiny_model(tiny_run: tuple[list[Extractor], Any]) -> None:
    extractors, outs = tiny_run
    for out in outs:
        pairs, validations = out.results["qa"], out.results["validate"]
        assert isinstance(validations, Validations)
        assert len(validations.items) == len(pairs.pairs)
        for v in validations.items:
            assert v is not None
            assert v.verdict in ("valid", "invalid")
            assert len(v.model_answer) <= Judgement.model_json_schema()["properties"]["answer"]["maxLength"]
        # One call per extractor and per QA pair: the grammar made every first reply valid.
        assert out.llm_calls == len(extractors) + len(pairs.pairs)


@pytest.mark.parametrize(
    ("invalid", "says"),
    [(TRUNCATED, "cut off at max_tokens"), (TOO_MANY, "keywords: List should have at most 8 items")],
    ids=["truncated", "over-bound"],
)
def test_invalid_reply_is_asked_again_with_its_error(tiny_model: LocalModel, invalid: Reply, says: str) -> None:
    backend = Injecting(LlamaBackend(tiny_model), first_time(Keywords, invalid))
    extractors = [FACTS, KEYWORDS, categories_extractor(LABELS)]
    [out] = BatchExtractor(backend, extractors, retries=2).run([make_chunk(0)], SOURCE)

    with pytest.raises(ExtractionError) as error:
        parse_reply(Keywords, invalid.text, invalid.finish_reason)
    assert says in str(error.value)
    first, retry = backend.rounds
    assert [job.schema for job in first] == [e.schema for e in extractors]
    [again] = retry
    assert again.schema is Keywords
    assert again.messages[-2].content == invalid.text
    assert f"That reply is invalid: {error.value}" in str(again.messages[-1].content)
    # The retry still starts with the chunk's prefix, so the llama.cpp backend reuses its evaluated state.
    llama = LlamaBackend(tiny_model)
    assert llama.request(again).prefix == llama.request(first[1]).prefix
    assert out.failures == []
    assert_fits(out.results["keywords"], Keywords)
    assert out.llm_calls == len(extractors) + 1


def test_reply_that_stays_invalid_is_recorded_and_others_succeed(tiny_model: LocalModel) -> None:
    backend = Injecting(LlamaBackend(tiny_model), lambda job: TRUNCATED if job.schema is Keywords else None)
    extractors = [FACTS, KEYWORDS, categories_extractor(LABELS)]
    outs = BatchExtractor(backend, extractors, retries=2).run([make_chunk(0), make_chunk(1)], SOURCE)

    assert len(backend.rounds) == 3  # the first round and two retries
    for out in outs:
        [failure] = out.failures
        assert failure.extractor == "keywords"
        assert failure.raw == TRUNCATED.text
        assert failure.attempts == 3
        assert "cut off at max_tokens" in failure.error
        assert "keywords" not in out.results
        assert set(out.results) == {"facts", "categories"}
        assert_fits(out.results["facts"], FACTS.schema)


def test_closed_model_refuses_to_generate(tiny_model_path: Path) -> None:
    with LocalModel(tiny_model_path, n_ctx=4096, n_threads=1, sampling=Sampling.deterministic()) as model:
        backend = LlamaBackend(model)
        [out] = BatchExtractor(backend, [KEYWORDS]).run([make_chunk(0)], SOURCE)
        assert "keywords" in out.results
    assert model.closed
    model.close()  # a second close is harmless
    with pytest.raises(ModelError, match="closed"):
        model.generate([GenRequest(prefix="", suffix="hello", max_tokens=4)])
    with pytest.raises(ModelError, match="closed"):
        model.tokenize("hello")
    # A run on a closed model is an error of the caller, not an extraction failure to record.
    with pytest.raises(ModelError, match="closed"):
        BatchExtractor(backend, [KEYWORDS]).run([make_chunk(1)], SOURCE)


# ================================================================ prefix-state reuse


@pytest.fixture(scope="module")
def reuse_runs(tiny_model_path: Path) -> dict[str, Any]:
    """One chunk's six extractor requests, with prefix-state reuse and as full prompts from scratch."""
    extractors = chunk_extractors()
    with LocalModel(tiny_model_path, n_ctx=8192, n_threads=1, sampling=Sampling.deterministic()) as model:
        backend = LlamaBackend(model)
        # Replies capped at 96 tokens: long enough to diverge if the restored state differed, and quick.
        requests = [
            replace(backend.request(Job(tuple(chunk_messages(make_chunk(1), SOURCE, e.task)), e.schema)), max_tokens=96)
            for e in extractors
        ]
        before = model.stats.prompt_tokens
        reused = model.generate(requests)
        reused_tokens = model.stats.prompt_tokens - before
        scratch = [
            model.complete(r.prefix + r.suffix, grammar=llama_grammar(e.schema), max_tokens=r.max_tokens)
            for r, e in zip(requests, extractors, strict=True)
        ]
        unrestored = [_without_restore(model, r, e.schema) for r, e in zip(requests, extractors, strict=True)]
        split = [
            (model.tokenize(r.prefix), model.tokenize(r.suffix), model.tokenize(r.prefix + r.suffix)) for r in requests
        ]
    return {
        "reused": reused,
        "reused_tokens": reused_tokens,
        "scratch": scratch,
        "unrestored": unrestored,
        "split": split,
    }


def _without_restore(model: LocalModel, request: GenRequest, schema: type[BaseModel]) -> str:
    """The reply when the prefix is evaluated afresh and the suffix after it: the batches of reuse, no snapshot."""
    llm, prefix = model.llama, model.tokenize(request.prefix)
    llm.reset()
    llm.eval(prefix)
    greedy = {"temperature": 0.0, "min_p": 0.0, "repeat_penalty": 1.0, "top_p": 1.0, "top_k": 0, "seed": 0}
    out = llm.create_completion(
        prefix + model.tokenize(request.suffix), max_tokens=request.max_tokens, grammar=llama_grammar(schema), **greedy
    )
    return str(out["choices"][0]["text"])


def test_prefix_reuse_gives_the_same_greedy_text_as_full_prompts(reuse_runs: dict[str, Any]) -> None:
    # Precondition: prefix and suffix tokenize at the split as the whole prompt does.
    assert all(prefix + suffix == whole for prefix, suffix, whole in reuse_runs["split"])
    reused, scratch = reuse_runs["reused"], reuse_runs["scratch"]
    # Restoring the snapshot is exact: the same replies as evaluating the prefix again in the same batches.
    assert [c.text for c in reused] == reuse_runs["unrestored"]
    # And the same as one evaluation of the whole prompt. llama.cpp batches that prompt differently, so this
    # holds only while rounding differences don't flip a greedy choice: true for the tiny model; a
    # random-weight 1.2B-shaped one flipped 4 of 6 replies on one chunk (kg_etl/bench/bench_llm.py).
    assert [c.text for c in reused] == [c.text for c in scratch]
    assert [c.finish_reason for c in reused] == [c.finish_reason for c in scratch]
    assert all(c.completion_tokens > 0 for c in reused)


def test_prefix_reuse_evaluates_the_chunk_once(reuse_runs: dict[str, Any]) -> None:
    split = reuse_runs["split"]
    prefix = len(split[0][0])
    suffixes = [len(suffix) for _, suffix, _ in split]
    assert all(len(p) == prefix for p, _, _ in split)
    # With reuse: the prefix once, then each extractor's own instructions only.
    assert reuse_runs["reused_tokens"] == prefix + sum(suffixes)
    assert [c.prompt_tokens for c in reuse_runs["reused"]] == suffixes
    # From scratch: every extractor evaluates the prefix again.
    assert [c.prompt_tokens for c in reuse_runs["scratch"]] == [prefix + s for s in suffixes]
    saved = sum(c.prompt_tokens for c in reuse_runs["scratch"]) - reuse_runs["reused_tokens"]
    assert saved == (len(split) - 1) * prefix


# ================================================================ GPU and memory reporting


@pytest.mark.skipif(gpu_offload_supported(), reason="this llama-cpp-python build can offload to a GPU")
def test_require_gpu_on_a_cpu_build_names_the_cuda_build_command(tiny_model_path: Path) -> None:
    with pytest.raises(GpuUnavailableError) as error:
        LocalModel(tiny_model_path, require_gpu=True)
    message = str(error.value)
    assert "\n" not in message
    assert 'CMAKE_ARGS="-DGGML_CUDA=on' in message
    assert "llama-cpp-python" in message
    assert isinstance(error.value, ModelError)  # the CLI's one-line handler catches it
    assert vram_used_mb() is None


def test_peak_rss_covers_the_current_resident_memory() -> None:
    block = b"x" * (32 << 20)  # written, so resident
    current = psutil.Process().memory_info().rss / 2**20
    assert peak_rss_mb() >= current - 1
    assert len(block) == 32 << 20


def test_process_vram_reads_this_process_row_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CSV that nvidia-smi prints (seen on an H200): one row per process holding GPU memory.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '416, 1542\\n416, 100\\n77, [N/A]\\n9, 20\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert runtime._process_vram_mb(416) == 1642.0  # summed over GPUs
    assert runtime._process_vram_mb(77) is None  # not attributable
    assert runtime._process_vram_mb(12345) is None  # holds no GPU memory
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert runtime._process_vram_mb(416) is None  # no nvidia-smi at all


# ================================================================ a scripted LangChain chat model


class ScriptedChat(BaseChatModel):
    """A chat model whose replies come from ``respond`` (a queue or a script), recording every call.

    ``with_structured_output(schema, include_raw=True)`` returns what LangChain's own implementations return:
    ``{"raw": AIMessage, "parsed": instance | None, "parsing_error": exception | None}``.
    """

    respond: Callable[[list[BaseMessage]], str]
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.respond(list(messages))))])

    def with_structured_output(  # type: ignore[override]
        self, schema: type[BaseModel], *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        def structured(value: Any) -> Any:
            raw = self.invoke(value)
            try:
                parsed, error = schema.model_validate_json(str(raw.content)), None
            except ValidationError as e:
                parsed, error = None, e
            return {"raw": raw, "parsed": parsed, "parsing_error": error} if include_raw else parsed

        return RunnableLambda(structured)


def queue(*replies: str) -> Callable[[list[BaseMessage]], str]:
    pending = deque(replies)
    return lambda _: pending.popleft()


def forbidden(_: list[BaseMessage]) -> str:
    raise AssertionError("the model was called")


class Script:
    """What a faithful model would answer, by extractor and chunk: content tests can check each result."""

    def __init__(self, extractors: Sequence[Extractor]) -> None:
        self.extractors = list(extractors)

    def __call__(self, messages: list[BaseMessage]) -> str:
        prompt = str(messages[1].content)  # the first human message: chunk and task
        i = next(i for i, text in enumerate(TEXTS) if text[:40] in prompt)
        if match := re.search(r"Question: (.*)\n", prompt):
            return json.dumps(self.judgement(match[1], i))
        name = next(e.name for e in self.extractors if e.task in prompt)
        return json.dumps(self.reply(name, i))

    @staticmethod
    def reply(name: str, i: int) -> dict[str, Any]:
        topic, first, second = TOPICS[i], *(s + "." for s in TEXTS[i].rstrip(".").split(". "))
        return {
            "facts": {"facts": [{"statement": f"{topic} is the subject of chunk {i}.", "triple": None}]},
            "taxonomy": {
                "paths": [{"nodes": [{"name": "Science", "importance": 2}, {"name": topic, "importance": 5}]}]
            },
            "categories": {"labels": [LABELS[i]]},
            "keywords": {"keywords": [{"term": topic, "relevance": 0.9}]},
            "summary": {"summary": f"Chunk {i} is about {topic}."},
            "qa": {
                "pairs": [
                    {"question": f"What does chunk {i} say first?", "answer": topic, "evidence": first},
                    {"question": f"What is chunk {i} made of?", "answer": "cheese", "evidence": "The moon is cheese."},
                    {"question": f"Who paid for chunk {i}?", "answer": "the ministry", "evidence": second},
                ]
            },
        }[name]

    @staticmethod
    def judgement(question: str, i: int) -> dict[str, Any]:
        """A faithful judge, answering from the chunk alone (it never sees the proposed answer)."""
        if question.startswith("Who paid"):
            return {"answerable": False, "answer": "not stated"}
        answer = {"What does": TOPICS[i], "What is c": "cheese"}[question[:9]]
        return {"answerable": True, "answer": answer}


def scripted_run(chat: ScriptedChat, extractors: Sequence[Extractor], chunks: Sequence[Chunk], **kw: Any) -> list[Any]:
    return BatchExtractor(LangChainBackend(chat, model_id="scripted"), extractors, **kw).run(chunks, SOURCE)


def test_scripted_results_per_extractor_per_chunk() -> None:
    extractors = chunk_extractors()
    chat = ScriptedChat(respond=Script(extractors))
    outs = scripted_run(chat, all_extractors(), [make_chunk(i) for i in range(3)])

    assert len(chat.calls) == 3 * (len(extractors) + 3)
    for i, out in enumerate(outs):
        assert out.failures == []
        assert out.llm_calls == len(extractors) + 3
        for e in extractors:
            assert out.results[e.name].model_dump(mode="json") == Script.reply(e.name, i)
        verdicts = [(v.verdict, v.judgement, v.evidence_found) for v in out.results["validate"].items]
        assert verdicts == [
            ("valid", "agrees", True),
            ("invalid", "agrees", False),  # the judge agrees, but the quote is not in the chunk
            ("invalid", "not_answerable", True),
        ]
    # The SPLIT marker of the llama.cpp prefix never reaches another model.
    assert not any("\x1e" in str(m.content) for call in chat.calls for m in call)


def test_parsing_error_is_retried_with_its_text_then_accepted() -> None:
    good = json.dumps({"keywords": [{"term": "nitrate", "relevance": 0.8}]})
    chat = ScriptedChat(respond=queue("not json at all", good))
    [out] = scripted_run(chat, [KEYWORDS], [make_chunk(0)])

    assert out.results["keywords"] == Keywords.model_validate_json(good)
    assert out.failures == []
    retry = chat.calls[1]
    assert retry[-2].content == "not json at all"
    assert "That reply is invalid: " in str(retry[-1].content)
    assert "Invalid JSON" in str(retry[-1].content)


@pytest.mark.parametrize(
    "copied",
    [
        {"keywords": [{"term": "relevance", "relevance": 0.9}]},  # a word of the instructions, not of the chunk
        {"keywords": [{"term": "...", "relevance": 0.9}]},  # a placeholder, as Gemma wrote
        {"keywords": [{"term": "names, technical terms, concepts", "relevance": 0.9}]},
    ],
)
def test_a_reply_that_repeats_the_prompt_is_asked_again_then_failed(copied: dict[str, Any]) -> None:
    chat = ScriptedChat(respond=lambda _: json.dumps(copied))
    [out] = scripted_run(chat, [KEYWORDS], [make_chunk(0)], retries=1)
    [failure] = out.failures
    assert "repeats the prompt" in failure.error and failure.attempts == 2 and "keywords" not in out.results
    assert "repeats the prompt" in str(chat.calls[1][-1].content), "the retry says what was wrong"


def test_a_real_answer_is_not_taken_for_an_echo() -> None:
    real = {"keywords": [{"term": "nitrate", "relevance": 0.9}, {"term": "groundwater", "relevance": 0.5}]}
    chat = ScriptedChat(respond=lambda _: json.dumps(real))
    [out] = scripted_run(chat, [KEYWORDS], [make_chunk(0)])
    assert out.failures == [] and len(chat.calls) == 1


def test_category_labels_come_in_an_order_of_their_own_for_each_chunk() -> None:
    labels = [f"Label {i}" for i in range(12)]
    extractor = categories_extractor(labels)
    orders = {extractor.instructions(make_chunk(i).text_hash) for i in range(3)}
    assert len(orders) == 3, "one order for every chunk: no label is always first"
    assert extractor.instructions(make_chunk(0).text_hash) == extractor.instructions(make_chunk(0).text_hash)
    assert all(label in order for order in orders for label in labels)


def test_the_model_sees_the_title_but_never_the_file_name() -> None:
    assert "report-2024.pdf" not in str(chunk_messages(make_chunk(0), "", KEYWORDS.task))
    assert 'from "Groundwater survey"' in str(chunk_messages(make_chunk(0), "Groundwater survey", KEYWORDS.task))


def test_no_prompt_shows_an_example_value_a_model_could_copy() -> None:
    for extractor in all_extractors():
        text = extractor.instructions("")
        assert '"..."' not in text and "Computing" not in text and '"person"' not in text, extractor.name


def test_reply_that_never_parses_is_a_failure_with_the_raw_reply() -> None:
    chat = ScriptedChat(respond=lambda _: '{"keywords": []}')  # valid JSON, below min_length
    [out] = scripted_run(chat, [KEYWORDS, FACTS], [make_chunk(0)], retries=1)

    [failure] = [f for f in out.failures if f.extractor == "keywords"]
    assert failure.raw == '{"keywords": []}'
    assert failure.attempts == 2
    assert "keywords" in failure.error


def test_second_run_is_answered_from_the_cache(tmp_path: Path) -> None:
    extractors, every = chunk_extractors(), all_extractors()
    cache = SqliteCache(tmp_path / "cache.sqlite")
    chunks = [make_chunk(i) for i in range(3)]
    first = scripted_run(ScriptedChat(respond=Script(extractors)), every, chunks, cache=cache)
    assert len(cache) == 3 * (len(extractors) + 3)

    again = scripted_run(ScriptedChat(respond=forbidden), every, chunks, cache=cache)
    assert [o.results for o in again] == [o.results for o in first]
    assert all(o.llm_calls == 0 for o in again)

    # An edited chunk is a new key: only it goes to the model.
    text = TEXTS[2].replace("higher court", "supreme court")
    chat = ScriptedChat(respond=Script(extractors))
    scripted_run(chat, every, [*chunks[:2], make_chunk(2, text)], cache=cache)
    assert len(chat.calls) == len(extractors) + 3
    assert all(text in str(call[1].content) for call in chat.calls)
    cache.close()


def test_extractor_selection_runs_only_the_chosen() -> None:
    extractors = select_extractors(["qa", "facts", "validate"])
    assert [e.name for e in extractors] == ["facts", "qa", "validate"]  # the registry's order, not the given one
    chat = ScriptedChat(respond=Script(extractors))
    [out] = scripted_run(chat, extractors, [make_chunk(1)])
    assert set(out.results) == {"facts", "qa", "validate"}
    assert len(chat.calls) == 2 + 3

    without = select_extractors(["keywords", "categories"], ExtractOptions(categories=LABELS))
    assert [e.name for e in without] == ["categories", "keywords"]
    with pytest.raises(ConfigError, match="needs qa"):
        select_extractors(["validate"])
    with pytest.raises(ConfigError, match="bogus"):
        select_extractors(["facts", "bogus"])


def merged(*parts: str) -> str:
    return "merged: [" + " + ".join(parts) + "]"


def reduce_script(messages: list[BaseMessage]) -> str:
    """A reduce step that shows what it merged: the numbered summaries of its prompt, joined."""
    items = re.findall(r"^\d+\. (.*)$", str(messages[1].content), flags=re.MULTILINE)
    return json.dumps({"summary": merged(*items)})


@pytest.mark.parametrize(
    ("n", "tokens_each", "group_sizes", "rounds", "expected"),
    [
        # Groups of three fit the 1500-token budget at 400 tokens a summary: 10 -> 4 -> 2 -> 1.
        (
            10,
            400,
            [3, 3, 3, 1, 3, 1, 2],
            3,
            merged(
                merged(merged("s01", "s02", "s03"), merged("s04", "s05", "s06"), merged("s07", "s08", "s09")),
                merged(merged("s10")),
            ),
        ),
        # Summaries too long to share a group are paired anyway, so every round shrinks: 4 -> 2 -> 1.
        (4, 2000, [2, 2, 2], 2, merged(merged("s01", "s02"), merged("s03", "s04"))),
    ],
    ids=["grouped", "paired"],
)
def test_document_summary_reduces_in_rounds(
    tmp_path: Path, n: int, tokens_each: int, group_sizes: list[int], rounds: int, expected: str
) -> None:
    leaves = [f"s{i:02d}" for i in range(1, n + 1)]
    cache = SqliteCache(tmp_path / "cache.sqlite")
    chat = ScriptedChat(respond=reduce_script)
    runner = BatchExtractor(LangChainBackend(chat, model_id="scripted"), [], cache=cache)
    result = runner.summarise_document(leaves, SOURCE, lambda _: tokens_each)

    assert isinstance(result, DocumentSummary)
    assert result.summary == expected
    assert result.rounds == rounds
    assert result.chunk_summaries == n
    sizes = [len(re.findall(r"^\d+\. ", str(call[1].content), flags=re.MULTILINE)) for call in chat.calls]
    assert sizes == group_sizes
    assert Summary.model_validate({"summary": result.summary})

    # Each reduce step is cached by its inputs: the same summaries again cost no call.
    again = BatchExtractor(LangChainBackend(ScriptedChat(respond=forbidden), model_id="scripted"), [], cache=cache)
    assert again.summarise_document(leaves, SOURCE, lambda _: tokens_each) == result
    cache.close()


def test_document_summary_of_one_chunk_needs_no_call() -> None:
    runner = BatchExtractor(LangChainBackend(ScriptedChat(respond=forbidden), model_id="scripted"), [])
    result = runner.summarise_document(["The only summary."], SOURCE, len)
    assert result == DocumentSummary(summary="The only summary.", rounds=0, chunk_summaries=1)


def test_failed_reduce_step_is_returned_as_a_failure() -> None:
    runner = BatchExtractor(LangChainBackend(ScriptedChat(respond=lambda _: "{}"), model_id="scripted"), [], retries=1)
    result = runner.summarise_document(["first summary", "second summary"], SOURCE, len)
    assert not isinstance(result, DocumentSummary)
    assert result.extractor == "summary"
    assert result.raw == "{}"
    assert result.attempts == 2


# ================================================================ QA validation on hand-made cases

CHUNK = TEXTS[1]


def pair(question: str, answer: str, evidence: str) -> QAPair:
    return QAPair(question=question, answer=answer, evidence=evidence)


def test_answerable_question_with_exact_evidence_is_valid() -> None:
    qa = pair(
        "When did Rosetta reach comet 67P?", "August 2014", "The Rosetta spacecraft reached comet 67P in August 2014."
    )
    v = judge(qa, Judgement(answerable=True, answer="in August 2014"), CHUNK)
    assert v.verdict == "valid"
    assert v.evidence_found and v.evidence_score == 1.0
    assert v.score >= 0.9


def test_question_the_chunk_does_not_answer_is_invalid() -> None:
    qa = pair(
        "Who built the Philae lander?", "the German Aerospace Center", "Its lander Philae touched down in November"
    )
    v = judge(qa, Judgement(answerable=False, answer="not stated"), CHUNK)
    assert v.verdict == "invalid"
    assert v.judgement == "not_answerable"
    assert v.score < 0.5


def test_disagreeing_judge_makes_the_pair_invalid() -> None:
    qa = pair("When did Philae touch down?", "in March", "Its lander Philae touched down in November")
    v = judge(qa, Judgement(answerable=True, answer="in November"), CHUNK)
    assert v.verdict == "invalid"
    assert v.evidence_found  # the quote is real; the answer is what is wrong


def test_evidence_missing_from_the_chunk_is_invalid_even_if_the_judge_agrees() -> None:
    qa = pair("What fuel did Rosetta use?", "hydrazine", "Rosetta burned hydrazine on its way to the comet.")
    v = judge(qa, Judgement(answerable=True, answer="hydrazine"), CHUNK)
    assert v.verdict == "invalid"
    assert not v.evidence_found
    assert v.evidence_score < EVIDENCE_THRESHOLD


@pytest.mark.parametrize(
    "quote",
    [
        "its lander, Philae, touched down in december on the surface of the comet",  # one word changed, case
        "Its lander Philae touched down in November on the surface of comet after a seven-hour descent",  # dropped
        "Its  lander Philae touched down in November on the surface of the comet…",  # spacing, ellipsis
    ],
    ids=["changed-word", "dropped-word", "punctuation"],
)
def test_small_copy_errors_in_the_evidence_are_tolerated(quote: str) -> None:
    assert evidence_score(quote, CHUNK) >= EVIDENCE_THRESHOLD
    qa = pair("When did Philae touch down?", "November", quote)
    assert judge(qa, Judgement(answerable=True, answer="in November"), CHUNK).verdict == "valid"


@pytest.mark.parametrize(
    ("question", "answer", "evidence"),
    [
        ("...?, 1: [", "###", "###}, {2: "),  # a junk pair a small model wrote, once judged valid with 1.0
        ("When did Rosetta reach comet 67P?", "###", "The Rosetta spacecraft reached comet 67P in August 2014."),
        ("When did Rosetta reach comet 67P?", "August 2014", "comet 67P in"),  # too short to prove anything
        ("August 2014 Rosetta", "August 2014", "The Rosetta spacecraft reached comet 67P in August 2014."),
    ],
    ids=["junk", "answer-without-words", "three-word-quote", "not-a-question"],
)
def test_a_pair_without_real_content_is_never_valid(question: str, answer: str, evidence: str) -> None:
    v = judge(pair(question, answer, evidence), Judgement(answerable=True, answer=answer), CHUNK)
    assert v.verdict == "invalid"


def test_an_answer_the_chunk_does_not_contain_is_invalid_even_if_the_judge_gives_it_too() -> None:
    qa = pair(
        "When did Rosetta reach comet 67P?", "in March 1999", "The Rosetta spacecraft reached comet 67P in August 2014."
    )
    assert judge(qa, Judgement(answerable=True, answer="in March 1999"), CHUNK).verdict == "invalid"


def test_the_judge_never_sees_the_proposed_answer() -> None:
    qa = pair("When did Rosetta reach comet 67P?", "a deliberately wrong answer", "The spacecraft reached comet 67P.")
    assert qa.answer not in validation_task(qa)


def test_words_scattered_over_the_chunk_are_not_evidence() -> None:
    scattered = "Philae reached the comet in August after a long descent"  # every word occurs, not together
    assert evidence_score(scattered, CHUNK) < EVIDENCE_THRESHOLD
    assert evidence_score("", CHUNK) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("August 2014", "august, 2014!", 1.0),
        ("in August 2014", "August 2014", 0.8),
        ("hydrazine", "xenon", 0.0),
        ("", "", 0.0),  # two empty answers say nothing: they do not agree
        ("", "something", 0.0),
    ],
)
def test_token_f1(a: str, b: str, expected: float) -> None:
    assert token_f1(a, b) == pytest.approx(expected)


# ================================================================ the LangChain adapter on the tiny model


class Verdict(BaseModel):
    """A small bounded schema for the adapter."""

    model_config = ConfigDict(extra="forbid")

    label: Literal["yes", "no"] = Field(description="the answer")
    reason: str = Field(max_length=30, description="why")
    tags: list[Annotated[str, Field(max_length=12)]] = Field(max_length=2, description="tags")


@pytest.fixture
def chat(tiny_model: LocalModel) -> ChatLocalLFM2:
    return ChatLocalLFM2(model=tiny_model, max_tokens=16)


def test_chat_invoke_returns_an_ai_message(chat: ChatLocalLFM2) -> None:
    message = chat.invoke("hi")
    assert isinstance(message, AIMessage)
    assert isinstance(message.content, str)
    assert message.response_metadata["finish_reason"] in ("stop", "length")


def test_structured_output_is_a_valid_instance(chat: ChatLocalLFM2) -> None:
    result = chat.with_structured_output(Verdict).invoke("Is the sky blue? Answer in JSON.")
    assert_fits(result, Verdict)
    raw = chat.with_structured_output(Verdict, include_raw=True).invoke("Is the sky blue?")
    assert raw["parsing_error"] is None
    assert raw["parsed"] == Verdict.model_validate_json(raw["raw"].content)


def test_langchain_backend_over_the_local_model_runs_every_extractor(chat: ChatLocalLFM2) -> None:
    extractors = all_extractors()
    [out] = BatchExtractor(LangChainBackend(chat), extractors).run([make_chunk(2)], SOURCE)
    assert out.failures == []
    for e in extractors[:-1]:  # all but the validation pass
        assert_fits(out.results[e.name], e.schema)
    assert len(out.results["validate"].items) == len(out.results["qa"].pairs)
    assert isinstance(out.results["qa"], QAPairs)
