"""Many sequences decoded together in one llama.cpp context: the batched counterpart of ``LocalModel.generate``.

llama-cpp-python's ``Llama`` decodes one sequence at a time, so a generation step reads every weight to make
one token. Decoding N sequences per step reads the weights once for N tokens: a large gain where decoding is
memory-bound (a GPU), a smaller one on a CPU (one core made 1.7x the tokens at 16 sequences, none at 8).
``ParallelDecoder`` opens a second context on the model that ``LocalModel`` already holds (the weights are
shared, not copied) and drives it with llama.cpp's batch API:

- up to ``n_parallel`` sequences ("slots") are live at once; when one finishes, its slot takes the next
  request (continuous batching). Results come back in request order whatever the finishing order;
- each distinct prefix is evaluated once, into a holder sequence that never decodes further, and copied
  into every slot that starts with it (``llama_memory_seq_cp``). Requests are admitted grouped by prefix,
  so one holder suffices and no prefix is evaluated twice. The copy is correct for LFM2's hybrid memory in
  the vendored llama.cpp: logits after a copied prefix equal those of a fresh evaluation, bit for bit
  (``tests/test_parallel.py``). The recurrent part shares the holder's state cell until the slot's next
  decode copies it; the attention part copies the holder's whole KV stream (each sequence has its own stream,
  ``kv_unified=False``), which costs a memcpy of the per-sequence KV buffer per request;
- each sequence has its own sampler chain, built exactly like llama-cpp-python 0.3.36's
  ``Llama._init_sampler`` and seeded with ``sampling.seed`` as ``LocalModel.complete`` reseeds each call,
  so equal logits give equal replies, greedy or sampled. Logits are equal for Q8_0 weights (the test model);
  K-quant CPU kernels change them with the batch shape (by up to 0.1 on random 350M weights), so replies can
  part after a near tie. The chains run on a thread pool: a grammar sampler checks the whole vocabulary;
- prompt and generation tokens go in separate decodes: llama.cpp splits a batch for LFM2's recurrent
  layers into equal-length sequence groups, so mixing them would not save a pass over the weights;
- the stopping rules are llama-cpp-python's: "stop" when an end-of-generation token is sampled (it is not
  part of the text nor counted), "length" at ``max_tokens`` unless the text ends inside a UTF-8 character,
  which it finishes first.

Memory: KV is ``(n_parallel + 1) * n_ctx_per_seq`` cells (12 KiB each for LFM2 350M-1.2B, 16 KiB for 2.6B;
``n_ctx_per_seq`` rounds up to a multiple of 256) plus a recurrent state per sequence (0.16 MiB for 1.2B) and
a 768 KiB candidate buffer per slot: size ``n_ctx_per_seq`` to prompt + reply, not to the model's window.
"""

from __future__ import annotations

import ctypes
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kg_etl.errors import ModelError
from kg_etl.llm.grammar import GrammarError
from kg_etl.llm.runtime import Completion, GenRequest, LocalModel, OnDone, Sampling, too_long

__all__ = ["ParallelDecoder"]

# Tokens per llama_decode call; llama-cpp-python's default n_batch, so a prefix is evaluated in the same
# chunks as on the sequential path.
_N_BATCH = 512
_PIECE_BYTES = 64
# llama_token_data: the candidate array a sampler chain works on.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass(frozen=True)
class _Prompt:
    """One request, tokenized the way ``LocalModel`` does it (prefix and suffix separately)."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    max_tokens: int
    too_long: Completion | None = None  # set for a request that cannot fit its sequence's context

    @property
    def shares_prefix(self) -> bool:
        # An empty suffix leaves no token to sample from after the copy: such a prompt is evaluated whole.
        return bool(self.prefix) and bool(self.suffix)


@dataclass
class _Slot:
    """A live sequence: which request it serves, where it is, and what it has generated."""

    seq_id: int
    index: int
    chain: Any
    max_tokens: int
    pos: int = 0
    prompt_tokens: int = 0
    pending: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    tail: bytes = b""
    multibyte: int = 0
    finish_reason: str | None = None


@dataclass
class _Entry:
    """One token of a batch; ``slot`` is set when its logits must be sampled."""

    token: int
    pos: int
    seq_id: int
    slot: _Slot | None = None


class ParallelDecoder:
    """Decodes up to ``n_parallel`` requests at once on ``model``'s weights. Close it (or use ``with``).

    Args:
        model: the resident model; its weights are shared. Close the decoder first (closing the model
            closes the decoder too).
        n_parallel: slots decoded together.
        n_ctx_per_seq: context per sequence (prompt + reply); default ``model.n_ctx``.
    """

    def __init__(self, model: LocalModel, n_parallel: int, *, n_ctx_per_seq: int | None = None) -> None:
        import llama_cpp

        if n_parallel < 1:
            raise ValueError(f"n_parallel must be >= 1, not {n_parallel}")
        if model.closed:
            raise ModelError(f"{model.path}: the model is closed")
        self._model = model
        self.n_parallel = n_parallel
        self._holder = n_parallel  # the extra sequence that keeps the current prefix
        llama = model.llama
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)  # threads, attention...
        per_seq = n_ctx_per_seq or model.n_ctx
        params.n_seq_max = n_parallel + 1
        params.n_ctx = per_seq * (n_parallel + 1)
        params.n_batch = params.n_ubatch = _N_BATCH
        params.kv_unified = False  # a KV stream per sequence: attention only over the sequence's own cells
        self._ctx: Any = llama_cpp.llama_init_from_model(llama.model, params)
        if not self._ctx:
            raise ModelError(
                f"{model.path}: llama.cpp could not create a {n_parallel}-sequence context of "
                f"{per_seq} tokens each; lower n_parallel or n_ctx_per_seq"
            )
        self.n_ctx_per_seq = int(llama_cpp.llama_n_ctx_seq(self._ctx))
        self._mem: Any = llama_cpp.llama_get_memory(self._ctx)
        self._vocab: Any = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._batch: Any = llama_cpp.llama_batch_init(_N_BATCH, 0, 1)
        self._piece = ctypes.create_string_buffer(_PIECE_BYTES)
        self._chains: dict[int, Any] = {}  # every live sampler chain, by address, so none outlives a call
        # A grammar sampler checks every vocabulary entry (several ms a token for a 65k vocabulary) and
        # llama.cpp runs it outside the GIL: the slots' samplers share a thread pool while the decoder idles.
        threads = min(n_parallel, max(1, int(params.n_threads_batch)))
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kg-etl-sample") if threads > 1 else None
        self._ids = np.arange(self._n_vocab, dtype=np.int32)
        self._candidates = [np.zeros(self._n_vocab, dtype=_TOKEN_DATA) for _ in range(n_parallel)]
        self._closed = False
        # The context must be freed before the model: llama-cpp-python frees its own context the same way.
        ref = weakref.ref(self)
        llama._model._exit_stack.callback(_close_if_alive, ref)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> ParallelDecoder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the context, the batch and any sampler chain left; the model stays loaded."""
        import llama_cpp

        if self._closed:
            return
        self._closed = True
        for chain in list(self._chains.values()):
            self._free_chain(chain)
        if self._pool is not None:
            self._pool.shutdown()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- generation ------------------------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenRequest], sampling: Sampling | None = None, on_done: OnDone | None = None
    ) -> list[Completion]:
        """Complete every request, up to ``n_parallel`` at a time; same contract as ``LocalModel.generate``.

        ``on_done(index, completion)`` is called as each request finishes, in finishing order, so that a
        caller can keep each reply at once. ``prompt_tokens`` counts what was evaluated for a request: a
        shared prefix is counted once, on the first request admitted with it. ``seconds`` is the wall time
        since the previous request finished (the first: since the call began), so the model's stats keep
        adding up to wall time.
        """
        if self._closed or self._model.closed:
            raise ModelError("this ParallelDecoder is closed (or its model is); create a new one")
        s = sampling or self._model.sampling
        prompts = [self._prompt(r) for r in requests]
        out: dict[int, Completion] = {}
        clock = [time.perf_counter()]
        for i, prompt in enumerate(prompts):
            if prompt.too_long is not None:  # failed alone, at once; the others run
                out[i] = prompt.too_long
                if on_done is not None:
                    on_done(i, prompt.too_long)

        def finished(slot: _Slot) -> None:
            now = time.perf_counter()
            completion = out[slot.index] = self._completion(slot, now - clock[0])
            clock[0] = now
            self._model.stats.add(completion)
            if on_done is not None:
                on_done(slot.index, completion)

        try:
            self._run(prompts, requests, s, finished)
        finally:
            self._release()
        return [out[i] for i in range(len(requests))]

    def _prompt(self, request: GenRequest) -> _Prompt:
        prefix, suffix = self._model.tokenize(request.prefix), self._model.tokenize(request.suffix)
        n = len(prefix) + len(suffix)
        if n == 0:
            raise ModelError("a request has an empty prompt (prefix and suffix): there is nothing to continue")
        if n + request.max_tokens > self.n_ctx_per_seq:
            return _Prompt((), (), 0, too_long(n, request.max_tokens, self.n_ctx_per_seq))
        # max_tokens <= 0 means "up to the context", as in llama-cpp-python.
        max_tokens = request.max_tokens if request.max_tokens > 0 else self.n_ctx_per_seq - n
        return _Prompt(tuple(prefix), tuple(suffix), max_tokens)

    def _run(
        self, prompts: list[_Prompt], requests: Sequence[GenRequest], s: Sampling, finished: Callable[[_Slot], None]
    ) -> None:
        # Grouped by prefix, first appearance first: the holder then changes only between groups.
        first = {r.prefix: i for i, r in reversed(list(enumerate(requests)))}
        runnable = [i for i, prompt in enumerate(prompts) if prompt.too_long is None]
        queue = deque(sorted(runnable, key=lambda i: first[requests[i].prefix]))
        live: dict[int, _Slot] = {}
        held: tuple[int, ...] | None = None
        while queue or live:
            free = [seq for seq in range(self.n_parallel) if seq not in live]
            admitted = []
            while queue and free:
                i = queue.popleft()
                slot = _Slot(free.pop(0), i, self._chain(s, requests[i].grammar), prompts[i].max_tokens)
                live[slot.seq_id] = slot
                admitted.append(slot)
            held = self._start(admitted, prompts, held)
            self._step([slot for slot in live.values() if slot.finish_reason is None])
            for seq_id in [q for q, slot in live.items() if slot.finish_reason is not None]:
                finished(self._retire(live.pop(seq_id)))

    def _start(
        self, slots: list[_Slot], prompts: list[_Prompt], held: tuple[int, ...] | None
    ) -> tuple[int, ...] | None:
        """Give new slots their prompts (prefix copied from the holder) and sample their first tokens."""
        import llama_cpp

        entries: list[_Entry] = []
        for slot in slots:
            prompt = prompts[slot.index]
            tokens = list(prompt.suffix)
            if prompt.shares_prefix:
                if held != prompt.prefix:
                    self._evaluate_prefix(prompt.prefix)
                    held = prompt.prefix
                    slot.prompt_tokens += len(prompt.prefix)  # counted on the first request that uses it
                llama_cpp.llama_memory_seq_cp(self._mem, self._holder, slot.seq_id, -1, -1)
                slot.pos = len(prompt.prefix)
            else:
                tokens = list(prompt.prefix) + tokens
            slot.prompt_tokens += len(tokens)
            entries += [_Entry(t, slot.pos + k, slot.seq_id) for k, t in enumerate(tokens)]
            entries[-1].slot = slot
            slot.pos += len(tokens)
        self._decode(entries)
        return held

    def _evaluate_prefix(self, prefix: tuple[int, ...]) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, self._holder, -1, -1)
        for i in range(0, len(prefix), _N_BATCH):
            chunk = prefix[i : i + _N_BATCH]
            # Logits for the chunk's last token, as llama-cpp-python's eval asks for: the same graph.
            self._decode_once([_Entry(t, i + k, self._holder, None) for k, t in enumerate(chunk)], want_last=True)

    def _step(self, slots: list[_Slot]) -> None:
        """Feed each slot's last sampled token and sample its next one, all in one batch."""
        entries = [_Entry(slot.pending.pop(), slot.pos, slot.seq_id, slot) for slot in slots]
        for slot in slots:
            slot.pos += 1
        self._decode(entries)

    def _decode(self, entries: list[_Entry]) -> None:
        for i in range(0, len(entries), _N_BATCH):
            self._decode_once(entries[i : i + _N_BATCH])

    def _decode_once(self, entries: list[_Entry], *, want_last: bool = False) -> None:
        import llama_cpp

        if not entries:
            return
        batch = self._batch
        batch.n_tokens = len(entries)
        for k, e in enumerate(entries):
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = e.token, e.pos, 1
            batch.seq_id[k][0] = e.seq_id
            batch.logits[k] = e.slot is not None or (want_last and k == len(entries) - 1)
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise ModelError(
                f"llama_decode failed with status {status} on a batch of {len(entries)} tokens "
                "(1: no room in the KV cache; lower n_parallel or raise n_ctx_per_seq)"
            )
        picks = [(e.slot, llama_cpp.llama_get_logits_ith(self._ctx, k)) for k, e in enumerate(entries) if e.slot]
        if self._pool is not None and len(picks) > 1:
            tokens = list(self._pool.map(lambda pick: self._sample(*pick), picks))
        else:
            tokens = [self._sample(slot, logits) for slot, logits in picks]
        for (slot, _), token in zip(picks, tokens, strict=True):
            self._accept(slot, token)

    def _sample(self, slot: _Slot, logits: Any) -> int:
        """``llama_sampler_sample`` spelled out, so that it can run on any thread: apply, pick, accept."""
        import llama_cpp

        if not logits:
            raise ModelError(f"llama.cpp returned no logits for sequence {slot.seq_id}")
        candidates = self._candidates[slot.seq_id]
        candidates["id"] = self._ids
        candidates["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        candidates["p"] = 0.0
        array = llama_cpp.llama_token_data_array(
            candidates.ctypes.data_as(llama_cpp.llama_token_data_p), self._n_vocab, -1, False
        )
        llama_cpp.llama_sampler_apply(slot.chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise ModelError(f"the sampler chain selected no token (index {array.selected} of {array.size})")
        token = int(array.data[array.selected].id)
        llama_cpp.llama_sampler_accept(slot.chain, token)
        return token

    def _accept(self, slot: _Slot, token: int) -> None:
        """Record a sampled token and decide, as llama-cpp-python's completion loop does, whether to stop."""
        import llama_cpp

        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            slot.finish_reason = "stop"
            return
        slot.generated.append(token)
        slot.tail = (slot.tail + self._token_bytes(token))[-3:]
        # Count the bytes still missing from a UTF-8 character cut at the end (llama-cpp-python's check,
        # which assumes three bytes of text); while any are, max_tokens does not stop the reply.
        for k, char in enumerate(slot.tail):
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    slot.multibyte = num - k
        if slot.multibyte > 0:
            slot.multibyte -= 1
        elif len(slot.generated) >= slot.max_tokens:
            slot.finish_reason = "length"
        if slot.finish_reason is None:
            slot.pending.append(token)

    def _token_bytes(self, token: int) -> bytes:
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, _PIECE_BYTES, 0, False)
        if n < 0:  # the piece is longer than the buffer: -n is its length
            self._piece = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, -n, 0, False)
        return bytes(self._piece.raw[:n])

    # -- sequences and samplers ----------------------------------------------------------------------------

    def _chain(self, s: Sampling, grammar: str | None) -> Any:
        """A sampler chain mirroring llama-cpp-python 0.3.36's ``Llama._init_sampler`` for ``s``."""
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._chains[ctypes.addressof(chain.contents)] = chain

        def add(sampler: Any) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)  # the chain owns it from here

        add(
            llama_cpp.llama_sampler_init_penalties(
                self._n_vocab, self._model.llama.last_n_tokens_size, s.repeat_penalty, 0.0, 0.0
            )
        )
        if grammar is not None:
            rules = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
            if not rules:  # adding NULL to the chain would crash in the first sample
                self._free_chain(chain)
                raise GrammarError(f"llama.cpp rejected the GBNF grammar (root rule 'root'):\n{grammar[:2000]}")
            add(rules)
        if s.temperature == 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
            return chain
        add(llama_cpp.llama_sampler_init_top_k(s.top_k))
        add(llama_cpp.llama_sampler_init_typical(1.0, 1))
        add(llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        add(llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(s.temperature))
        add(llama_cpp.llama_sampler_init_dist(s.seed))
        return chain

    def _free_chain(self, chain: Any) -> None:
        import llama_cpp

        del self._chains[ctypes.addressof(chain.contents)]
        llama_cpp.llama_sampler_free(chain)  # frees the samplers it holds too

    def _retire(self, slot: _Slot) -> _Slot:
        import llama_cpp

        self._free_chain(slot.chain)
        slot.chain = None
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)  # whole range: always allowed
        return slot

    def _release(self) -> None:
        """Free what a call leaves (chains of slots an error interrupted) and empty the memory."""
        import llama_cpp

        for chain in list(self._chains.values()):
            self._free_chain(chain)
        llama_cpp.llama_memory_clear(self._mem, True)

    def _completion(self, slot: _Slot, seconds: float) -> Completion:
        text = self._model.llama.detokenize(slot.generated).decode("utf-8", errors="ignore")
        return Completion(
            text=text,
            finish_reason=slot.finish_reason or "stop",
            prompt_tokens=slot.prompt_tokens,
            completion_tokens=len(slot.generated),
            seconds=seconds,
        )


def _close_if_alive(ref: weakref.ref[ParallelDecoder]) -> None:
    decoder = ref()
    if decoder is not None:
        decoder.close()
