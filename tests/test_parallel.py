"""ParallelDecoder against the sequential path, on the tiny random LFM2 model and the real llama.cpp.

The tiny model is Q8_0, whose CPU kernels give the same logits whatever the batch, so batched decoding must
reproduce ``LocalModel.generate`` exactly: greedy, and also sampled with the same seed. (K-quant models do
not have that property: their logits move in the last bits with the batch shape.)
"""

from __future__ import annotations

import ctypes
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import llama_cpp
import numpy as np
import psutil
import pytest
from pydantic import BaseModel, ConfigDict, Field

from kg_etl.errors import ModelError
from kg_etl.llm import parallel
from kg_etl.llm.grammar import GrammarError, max_tokens_for, parse_reply, schema_grammar
from kg_etl.llm.parallel import ParallelDecoder
from kg_etl.llm.runtime import TOO_LONG, Completion, GenRequest, LocalModel, Sampling

SAMPLED = Sampling(temperature=0.8, min_p=0.05, repeat_penalty=1.1, seed=7)


class Fact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(min_length=1, max_length=10)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=2)
    confidence: int = Field(ge=0, le=5)
    negated: bool


GRAMMAR = schema_grammar(Fact)
FACT_TOKENS = max_tokens_for(Fact)
_WORDS = ("alpha", "beta", "delta", "river", "stone", "cat", "dog", "42", "7", "é", "ü", "漢", "{", ":", ",", "x")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _requests(n_prefixes: int, n: int, *, grammar_every: int = 2, seed: int = 0) -> list[GenRequest]:
    """``n`` requests cycling over ``n_prefixes`` prefixes (interleaved), every ``grammar_every``-th constrained."""
    rng = random.Random(seed)
    prefixes = [f"<|startoftext|><|im_start|>system\n{_text(rng, 30)}<|im_end|>\n" for _ in range(n_prefixes)]
    out = []
    for i in range(n):
        constrained = grammar_every and i % grammar_every == 0
        out.append(
            GenRequest(
                prefixes[i % n_prefixes],
                f"<|im_start|>user\n{_text(rng, 6)}<|im_end|>\n<|im_start|>assistant\n",
                GRAMMAR if constrained else None,
                FACT_TOKENS if constrained else 24,
            )
        )
    return out


def _same(a: Completion, b: Completion) -> bool:
    return (a.text, a.finish_reason, a.completion_tokens) == (b.text, b.finish_reason, b.completion_tokens)


@pytest.fixture
def decoder(tiny_model: LocalModel) -> Iterator[ParallelDecoder]:
    with ParallelDecoder(tiny_model, 3, n_ctx_per_seq=1024) as d:
        yield d


# --- same replies as the sequential path ------------------------------------------------------------------


@pytest.mark.parametrize("n_parallel", [1, 3, 8])
@pytest.mark.parametrize("sampling", [Sampling.deterministic(), SAMPLED], ids=["greedy", "sampled"])
def test_replies_match_the_sequential_path(tiny_model: LocalModel, n_parallel: int, sampling: Sampling) -> None:
    # 11 requests over 3 interleaved prefixes, plus one without a prefix: more requests than slots, the
    # holder re-filled while copies of the previous prefix are still pending.
    requests = [*_requests(3, 11), GenRequest("", "<|startoftext|>no prefix here", None, 16)]
    expected = tiny_model.generate(requests, sampling)
    with ParallelDecoder(tiny_model, n_parallel, n_ctx_per_seq=1024) as d:
        got = d.generate(requests, sampling)
    assert [c.text for c in got] == [c.text for c in expected]
    assert all(_same(a, b) for a, b in zip(got, expected, strict=True))
    # The comparison is only worth something if replies depend on their prompts.
    assert len({c.text for c in got}) > 3 or sampling.temperature == 0


def test_default_context_and_sampling_come_from_the_model(tiny_model: LocalModel) -> None:
    requests = _requests(2, 4)
    with ParallelDecoder(tiny_model, 2) as d:
        assert d.n_ctx_per_seq == tiny_model.n_ctx
        got = d.generate(requests)  # no sampling given: the model's own (greedy here)
    assert all(_same(a, b) for a, b in zip(got, tiny_model.generate(requests), strict=True))


def test_copied_prefix_equals_fresh_evaluation_in_hybrid_memory(tiny_model: LocalModel) -> None:
    """llama_memory_seq_cp on LFM2's conv + attention memory gives the logits of evaluating the prefix anew."""
    params = llama_cpp.llama_context_params.from_buffer_copy(tiny_model.llama.context_params)
    params.n_seq_max, params.n_ctx, params.kv_unified = 3, 3 * 512, False
    ctx = llama_cpp.llama_init_from_model(tiny_model.llama.model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(tiny_model.llama.model))

    def decode(seq: int, tokens: list[int], start: int) -> np.ndarray:
        batch.n_tokens = len(tokens)
        for k, token in enumerate(tokens):
            batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.logits[k] = token, start + k, 1, False
            batch.seq_id[k][0] = seq
        batch.logits[len(tokens) - 1] = True
        assert llama_cpp.llama_decode(ctx, batch) == 0
        logits = llama_cpp.llama_get_logits_ith(ctx, len(tokens) - 1)
        return np.ctypeslib.as_array(logits, shape=(n_vocab,)).copy()

    try:
        prefix = tiny_model.tokenize("<|startoftext|>" + _text(random.Random(1), 40))
        suffix = tiny_model.tokenize("and then the question")
        fresh = decode(0, prefix + suffix, 0)
        decode(1, prefix, 0)
        mem = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_rm(mem, 2, -1, -1)
        llama_cpp.llama_memory_seq_cp(mem, 1, 2, -1, -1)
        decode(1, tiny_model.tokenize("something else entirely"), len(prefix))  # the source moves on
        copied = decode(2, suffix, len(prefix))
        llama_cpp.llama_memory_seq_rm(mem, 0, -1, -1)
        without_prefix = decode(0, suffix, 0)
        assert np.array_equal(copied, fresh)
        assert not np.allclose(without_prefix, fresh)  # the state matters, so the equality means something
        assert not llama_cpp.llama_memory_seq_rm(mem, 2, 5, -1)  # partial removal: refused for LFM2
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


# --- grammar, length, accounting --------------------------------------------------------------------------


def test_sampled_grammar_replies_all_finish_and_validate(decoder: ParallelDecoder) -> None:
    requests = _requests(4, 20, grammar_every=1, seed=3)
    replies = decoder.generate(requests, SAMPLED)
    assert {c.finish_reason for c in replies} == {"stop"}
    facts = [parse_reply(Fact, c.text, c.finish_reason) for c in replies]
    assert len({f.model_dump_json() for f in facts}) > 1


def test_small_max_tokens_finishes_by_length(tiny_model: LocalModel, decoder: ParallelDecoder) -> None:
    requests = [GenRequest(r.prefix, r.suffix, None, 3) for r in _requests(2, 5)]
    replies = decoder.generate(requests)
    assert {c.finish_reason for c in replies} == {"length"}
    assert all(c.completion_tokens >= 3 for c in replies)  # more only to finish a cut UTF-8 character
    assert all(_same(a, b) for a, b in zip(replies, tiny_model.generate(requests), strict=True))


def test_zero_max_tokens_means_up_to_the_context(tiny_model: LocalModel, decoder: ParallelDecoder) -> None:
    requests = [GenRequest(r.prefix, r.suffix, GRAMMAR, 0) for r in _requests(1, 2)]  # the grammar ends them
    replies = decoder.generate(requests)
    assert {c.finish_reason for c in replies} == {"stop"}
    assert all(_same(a, b) for a, b in zip(replies, tiny_model.generate(requests), strict=True))


def test_shared_prefix_is_evaluated_and_counted_once(tiny_model: LocalModel, decoder: ParallelDecoder) -> None:
    requests = _requests(2, 7)  # prefixes A B A B A B A
    n_prefix = [len(tiny_model.tokenize(r.prefix)) for r in requests]
    n_suffix = [len(tiny_model.tokenize(r.suffix)) for r in requests]
    before = tiny_model.stats.prompt_tokens
    replies = decoder.generate(requests)
    # The first request of each prefix carries it; the rest only evaluate their suffix.
    assert [c.prompt_tokens for c in replies] == [
        s + (p if i < 2 else 0) for i, (p, s) in enumerate(zip(n_prefix, n_suffix, strict=True))
    ]
    assert tiny_model.stats.prompt_tokens - before == n_prefix[0] + n_prefix[1] + sum(n_suffix)
    assert tiny_model.stats.completion_tokens >= sum(c.completion_tokens for c in replies)


def test_each_reply_is_handed_over_as_it_finishes_and_seconds_add_up(decoder: ParallelDecoder) -> None:
    seen: list[tuple[int, float]] = []
    started = time.perf_counter()
    replies = decoder.generate(_requests(1, 4), on_done=lambda i, c: seen.append((i, time.perf_counter())))
    wall = time.perf_counter() - started
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3]
    assert all(c.seconds > 0 for c in replies)
    assert sum(c.seconds for c in replies) == pytest.approx(wall, rel=0.2)


def test_no_requests_no_replies(decoder: ParallelDecoder) -> None:
    assert decoder.generate([]) == []


def test_a_request_longer_than_its_context_fails_alone_and_the_others_run(tiny_model: LocalModel) -> None:
    with ParallelDecoder(tiny_model, 2, n_ctx_per_seq=256) as d:
        long, short = d.generate([GenRequest("x " * 200, "y", None, 100), GenRequest("x", " y", None, 4)])
    assert long.finish_reason == TOO_LONG and "in 256 tokens of context" in long.text and long.prompt_tokens == 0
    assert short.finish_reason in ("stop", "length") and short.completion_tokens > 0
    sequential = tiny_model.generate([GenRequest("x " * 9000, "y", None, 100)])
    assert sequential[0].finish_reason == TOO_LONG


def test_empty_prompt_is_refused(decoder: ParallelDecoder) -> None:
    with pytest.raises(ModelError, match="empty prompt"):
        decoder.generate([GenRequest("", "", None, 4)])


def test_invalid_grammar_raises_and_leaves_the_decoder_usable(decoder: ParallelDecoder) -> None:
    good = _requests(1, 2)
    with pytest.raises(GrammarError, match="rejected"):
        decoder.generate([*good, GenRequest(good[0].prefix, "x", "root ::= [unclosed", 8)])
    assert not decoder._chains  # no sampler chain left behind
    assert len(decoder.generate(good)) == 2


# --- lifecycle -----------------------------------------------------------------------------------------------


def test_generate_after_close_raises(tiny_model: LocalModel) -> None:
    d = ParallelDecoder(tiny_model, 2, n_ctx_per_seq=512)
    d.close()
    d.close()  # idempotent
    assert d.closed
    with pytest.raises(ModelError, match="closed"):
        d.generate(_requests(1, 1))


def test_closing_the_model_closes_the_decoder_first(tiny_model_path: Path) -> None:
    model = LocalModel(tiny_model_path, n_ctx=1024, sampling=Sampling.deterministic())
    d = ParallelDecoder(model, 2, n_ctx_per_seq=512)
    model.close()  # frees the decoder's context before the weights it points at
    assert d.closed
    with pytest.raises(ModelError, match="closed"):
        d.generate(_requests(1, 1))


def test_repeated_calls_do_not_leak(tiny_model: LocalModel, decoder: ParallelDecoder) -> None:
    requests = _requests(2, 6)
    decoder.generate(requests, SAMPLED)  # first call: allocator pools, pages of the context buffers
    rss = psutil.Process().memory_info().rss
    for _ in range(20):
        decoder.generate(requests, SAMPLED)
    assert psutil.Process().memory_info().rss - rss < 8 * 2**20
    assert not decoder._chains


def test_all_is_exported() -> None:
    assert parallel.__all__ == ["ParallelDecoder"]
    assert ctypes.sizeof(llama_cpp.llama_token_data) == parallel._TOKEN_DATA.itemsize
