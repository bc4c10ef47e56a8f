"""A model server the user already runs: llama-server, vLLM, Ollama's ``/v1``, any OpenAI-compatible endpoint.

``kg-etl ingest --llm URL`` sends every extractor's jobs there through LangChain's chat model interface
(``langchain_openai.ChatOpenAI``; the ``server`` extra installs it), several at once (``--llm-concurrency``),
with the same cache, retries, failures and report as a local model.

What a server can promise differs, so the first job finds out, and the run keeps the best that works:

1. ``json_schema``: OpenAI's structured output (vLLM, llama.cpp's llama-server, Ollama): the server
   constrains the reply to the extractor's JSON schema;
2. ``json_object`` with a ``schema``: llama-cpp-python's server and older llama.cpp builds;
3. ``json_object``: any JSON, the schema stated in the prompt;
4. plain text, the schema stated in the prompt.

A server that refuses a format (HTTP 4xx/5xx naming the request) is asked again one step down. Whatever the
server promised, every reply is validated against the schema, and fields the grammar would have copied
from the chunk (``grammar.COPY``) are checked against it: an invalid reply is asked for again with the
error, as for a local model, and recorded as a failure when retries run out.

Chunks are cut by an estimate of four characters a token (the server's tokenizer is not at hand), so a
folder ingested through a server is chunked the same on every run against any server.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kg_etl.chunk import approx_tokens
from kg_etl.config import IngestSettings
from kg_etl.errors import ConfigError, ModelError
from kg_etl.extract.base import Job, OnReply, Reply
from kg_etl.llm.grammar import max_tokens_for, not_copied
from kg_etl.llm.pool import ModelPool, ModelUse
from kg_etl.llm.prompt import SPLIT
from kg_etl.llm.runtime import ModelStats

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

__all__ = ["FORMATS", "MAX_REPLY_TOKENS", "ApproxTokenizer", "ServerBackend", "ServerPool", "served_models"]

FORMATS = ("json_schema", "json_object_schema", "json_object", "text")
# The most tokens a reply may take. The grammar's bound (up to ~10k tokens for a chunk's facts) is for the
# longest possible document; real replies are far shorter, and many servers refuse a max_tokens that does
# not fit their context beside the prompt.
MAX_REPLY_TOKENS = 2048
_TIMEOUT_S = 600.0  # one reply on a busy CPU server can take minutes


class ApproxTokenizer:
    """Token counts estimated from characters (``chunk.approx_tokens``), where no tokenizer is at hand."""

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def close(self) -> None:
        pass


def served_models(settings: IngestSettings) -> list[str]:
    """The models the server lists (``GET /models``); empty where it does not list them (HTTP 404).

    Raises:
        ModelError: the server cannot be reached or refuses the key.
        ConfigError: the server extra (LangChain's OpenAI client) is not installed.
    """
    try:
        from openai import NotFoundError, OpenAI, OpenAIError
    except ImportError as e:
        raise ConfigError("--llm needs the server extra: pip install 'kg-etl[server]'") from e
    assert settings.llm_url is not None
    client = OpenAI(base_url=settings.llm_url, api_key=_key(settings), timeout=30.0, max_retries=1)
    try:
        return [str(model.id) for model in client.models.list()]
    except NotFoundError:
        return []
    except OpenAIError as e:
        raise ModelError(f"{settings.llm_url}: {_why(e)}; is the server running? (--llm / KG_ETL_LLM)") from e


def _key(settings: IngestSettings) -> str:
    # OpenAI's client insists on a key; servers without authentication ignore it.
    return settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"


class ServerBackend:
    """Jobs on a server's model, ``concurrency`` at a time, each reply checked against its schema."""

    def __init__(self, url: str, model: str, api_key: str, *, concurrency: int = 4, deterministic: bool = False):
        self.url, self.model, self.concurrency = url, model, concurrency
        self.stats = ModelStats()
        self.format = FORMATS[0]  # the best one the server has not refused
        self._lock = threading.Lock()
        self._chat = _chat_model(url, model, api_key, deterministic)

    @property
    def model_id(self) -> str:
        """A server's model is its URL and name: another server or model gives other answers."""
        return f"server:{self.url.rstrip('/')}:{self.model}"

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        """Every job, ``concurrency`` at a time; ``on_reply`` is called in this thread as each arrives."""
        replies: list[Reply | None] = [None] * len(jobs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._one, job): i for i, job in enumerate(jobs)}
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                replies[i] = future.result()
                if on_reply is not None:
                    on_reply(i, replies[i])  # type: ignore[arg-type]
        return [reply for reply in replies if reply is not None]

    def _one(self, job: Job) -> Reply:
        started = time.perf_counter()
        message = self._ask(job)
        usage = getattr(message, "usage_metadata", None) or {}
        reply = Reply(
            text=str(message.content),
            finish_reason=str(message.response_metadata.get("finish_reason") or "stop"),
            prompt_tokens=int(usage.get("input_tokens", 0)),
            completion_tokens=int(usage.get("output_tokens", 0)),
            error=_check(job, str(message.content)),
        )
        with self._lock:
            self.stats.calls += 1
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
            self.stats.seconds += time.perf_counter() - started
        return reply

    def _ask(self, job: Job) -> Any:
        """The server's reply in the best format it accepts; a refused format is not tried again this run."""
        from openai import APIConnectionError, APIStatusError, AuthenticationError

        while True:
            fmt = self.format
            try:
                return self._chat.invoke(
                    _messages(job, fmt), response_format=_response_format(job.schema, fmt),
                    max_tokens=min(max_tokens_for(job.schema), MAX_REPLY_TOKENS),
                )  # fmt: skip
            except AuthenticationError as e:
                raise ModelError(f"{self.url}: the server refused the API key; set KG_ETL_LLM_API_KEY") from e
            except APIConnectionError as e:
                raise ModelError(f"{self.url}: {_why(e)}; is the server still running?") from e
            except APIStatusError as e:
                if e.status_code not in (400, 404, 415, 422, 500, 501) or fmt == FORMATS[-1]:
                    raise ModelError(f"{self.url}: the server failed a request ({_why(e)})") from e
                with self._lock:  # step down once, whichever thread saw the refusal first
                    if self.format == fmt:
                        self.format = FORMATS[FORMATS.index(fmt) + 1]


def _chat_model(url: str, model: str, api_key: str, deterministic: bool) -> BaseChatModel:
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as e:
        raise ConfigError("--llm needs the server extra: pip install 'kg-etl[server]'") from e
    from pydantic import SecretStr

    options: dict[str, Any] = {"temperature": 0.0} if deterministic else {}
    return ChatOpenAI(
        base_url=url, api_key=SecretStr(api_key), model=model, timeout=_TIMEOUT_S, max_retries=2, **options
    )


def _messages(job: Job, fmt: str) -> list[BaseMessage]:
    """The job's messages without the llama.cpp prefix marker; the schema stated where the server won't hold it."""
    messages = [m.model_copy(update={"content": str(m.content).replace(SPLIT, "")}) for m in job.messages]
    if fmt in ("json_object", "text"):
        schema = json.dumps(job.schema.model_json_schema(), separators=(",", ":"))
        last = messages[-1]
        messages[-1] = last.model_copy(
            update={"content": f"{last.content}\n\nAnswer with one JSON object that fits this JSON Schema: {schema}"}
        )
    return messages


def _response_format(schema: type[BaseModel], fmt: str) -> dict[str, Any] | None:
    body = schema.model_json_schema()
    if fmt == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": body, "strict": False}}
    if fmt == "json_object_schema":
        return {"type": "json_object", "schema": body}
    return {"type": "json_object"} if fmt == "json_object" else None


def _check(job: Job, text: str) -> str | None:
    """Why a reply will not do, beyond its schema: values that should be copied from the text and are not.

    The schema itself is checked by the batch extractor (``grammar.parse_reply``), which asks again with its
    error; this adds the check the grammar makes for a local model. None when there is nothing to say.
    """
    try:
        result = job.schema.model_validate_json(text)
    except ValidationError:
        return None  # the batch extractor reports it, with pydantic's message
    missing = not_copied(result, job.source)
    if not missing:
        return None
    quoted = ", ".join(repr(value[:60]) for value in missing[:3])
    return f"not in the excerpt: {quoted}; copy names, terms and quotes word for word from the excerpt"


def _why(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:200] or type(error).__name__


class ServerPool(ModelPool):
    """The run's model, on a server: nothing to load, one backend for every extractor, usage in the report."""

    def __init__(self, settings: IngestSettings, notify: Any = None) -> None:
        super().__init__(settings, notify)
        if settings.llm_url is None:
            raise ConfigError("a server pool needs --llm URL")
        self.url = settings.llm_url
        model = settings.llm_model or next(iter(served_models(settings)), None)
        if model is None:
            raise ModelError(f"{self.url} lists no model; name one with --llm-model")
        concurrency = settings.llm_concurrency
        self.server = ServerBackend(
            self.url, model, _key(settings), concurrency=concurrency, deterministic=settings.deterministic
        )
        self.usage[model] = ModelUse(name=model, model_id=self.server.model_id, loads=1, server=self.url)
        self._notify(f"model {model} on {self.url} ({concurrency} requests at a time)")

    def path(self, ref: str) -> Path:
        return Path(self.server.model)

    def model_id(self, ref: str) -> str:
        return self.server.model_id

    def tokenizer(self, ref: str) -> Any:
        return ApproxTokenizer()

    def backend(self, ref: str) -> ServerBackend:
        return self.server

    def stats(self) -> ModelStats:
        return self.server.stats

    def release(self, ref: str) -> None:
        self._record()

    def close(self) -> None:
        self._record()

    def _record(self) -> None:
        use, stats = self.usage[self.server.model], self.server.stats
        use.calls, use.prompt_tokens = stats.calls, stats.prompt_tokens
        use.completion_tokens, use.seconds = stats.completion_tokens, stats.seconds
        use.placement = f"{self.server.format} replies"  # the best reply format the server took
