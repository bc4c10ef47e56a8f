"""What the ingest process and a model worker exchange: plain data, with no LangChain (the worker starts lean).

The protocol, over a socket pair (``multiprocessing.connection`` framing, pickled tuples):

    parent -> worker: WorkerSpec                       worker -> parent: ("ready", WorkerInfo) | ("error", exc)
    parent -> worker: ("generate", [ChatRequest], Sampling | None)
                                                       worker -> parent: ("reply", i, Completion) per request,
                                                                         as each finishes; then ("done",
                                                                         seconds generating) or ("error", exc)
    parent -> worker: ("close",)                       worker -> parent: ("closed", peak RSS MiB); exits 0
"""

from __future__ import annotations

from dataclasses import dataclass

from kg_etl.llm.runtime import GenRequest, LocalModel, Sampling

__all__ = ["SPLIT", "ChatRequest", "WorkerInfo", "WorkerSpec", "gen_request"]

# Marks where the shared prefix ends inside the rendered prompt. A control character: the reader strips
# those from document text, so it can never occur in a chunk.
SPLIT = "\x1e"


@dataclass(frozen=True)
class WorkerSpec:
    """What the worker loads, and how."""

    path: str
    n_ctx: int
    n_gpu_layers: int
    require_gpu: bool
    threads: int
    sampling: Sampling
    parallel: int
    n_ctx_per_seq: int
    extra_bufts: bool
    chat_template: str | None = None


@dataclass(frozen=True)
class WorkerInfo:
    """What the worker reports once the model is loaded."""

    pid: int
    offloaded: bool
    rss_mb: float
    load_seconds: float


@dataclass(frozen=True)
class ChatRequest:
    """A job as plain data: chat messages (the shared prefix ends at ``SPLIT``), a grammar, a token budget."""

    messages: tuple[tuple[str, str], ...]  # (role, content)
    grammar: str | None
    max_tokens: int


def gen_request(model: LocalModel, request: ChatRequest) -> GenRequest:
    """Rendered with the model's chat template, split where the shared prefix (system prompt + chunk) ends."""
    rendered = model.render([{"role": role, "content": content} for role, content in request.messages])
    prefix, _, suffix = rendered.partition(SPLIT)
    return GenRequest(prefix=prefix, suffix=suffix, grammar=request.grammar, max_tokens=request.max_tokens)
