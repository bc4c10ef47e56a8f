"""The random LFM2 GGUF writer, checked by reading its files back with gguf-py and with real llama.cpp."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from kg_etl import testing
from kg_etl.testing import PRESETS, write_tiny_model

UTF8_TEXT = '{"name": "Zoë Ñandú", "city": "東京", "tags": ["a\\"b", null]}\n\tdone — ok 🚀'


def test_all_lists_every_public_name() -> None:
    defined_here = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", testing.__name__) == testing.__name__
    }
    assert set(testing.__all__) == defined_here


def test_tiny_model_is_small_fast_and_the_same_for_a_seed(tmp_path: Path) -> None:
    start = time.perf_counter()
    first = write_tiny_model(tmp_path / "a.gguf", seed=3)
    elapsed = time.perf_counter() - start
    second = write_tiny_model(tmp_path / "b.gguf", seed=3)
    other = write_tiny_model(tmp_path / "c.gguf", seed=4)
    print(f"tiny model: {first.stat().st_size} bytes in {elapsed:.3f} s")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert first.stat().st_size < 1_000_000
    assert elapsed < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]  # no .incomplete


def test_unknown_preset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset '3b'"):
        write_tiny_model(tmp_path / "x.gguf", preset="3b")
    assert list(tmp_path.iterdir()) == []


# Public LFM2 configs (shared/notes/llama-cpp.md): layers, attention layers, hidden, ff, heads, KV heads.
_ATTN_16 = (2, 5, 8, 10, 12, 14)
PUBLIC_SHAPES = {
    "350m": (16, _ATTN_16, 1024, 4608, 16, 8),
    "700m": (16, _ATTN_16, 1536, 6912, 24, 8),
    "1.2b": (16, _ATTN_16, 2048, 8192, 32, 8),
    "2.6b": (30, (2, 6, 10, 14, 18, 21, 24, 27), 2048, 10752, 32, 8),
}


@pytest.mark.parametrize("preset", sorted(PUBLIC_SHAPES))
def test_real_presets_have_the_public_lfm2_shapes(preset: str) -> None:
    shape = PRESETS[preset]
    got = (shape.n_layer, shape.attention_layers, shape.hidden, shape.ff, shape.n_head, shape.n_head_kv)
    assert got == PUBLIC_SHAPES[preset]
    assert (shape.n_vocab, shape.head_dim, shape.quant) == (65536, 64, "Q4_K_M")


@pytest.mark.parametrize(
    ("qtype", "max_relative_rms"),
    [(gguf.GGMLQuantizationType.Q4_K, 0.1), (gguf.GGMLQuantizationType.Q6_K, 0.03)],
)
def test_k_quant_encoders_round_trip_through_gguf_py(qtype: gguf.GGMLQuantizationType, max_relative_rms: float) -> None:
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    values = np.random.default_rng(0).standard_normal((64, block_size)).astype(np.float32)
    values[0] = 0.0  # an all-zero block must not divide by zero
    restored = gguf.dequantize(testing._quantize(values, qtype), qtype).reshape(values.shape)
    assert np.all(restored[0] == 0.0)
    assert np.sqrt(np.mean((restored - values) ** 2)) < max_relative_rms * values.std()


# ---------------------------------------------------------------- the tiny model in llama.cpp


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llama_cpp.Llama]:
    path = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf")
    # logits_all keeps every position's logits in llama.scores, so tests can look for NaN.
    llama = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False, seed=0, logits_all=True)
    yield llama
    llama.close()


def test_llama_cpp_reads_the_lfm2_metadata(tiny_llama: llama_cpp.Llama) -> None:
    meta = tiny_llama.metadata
    assert meta["general.architecture"] == "lfm2"
    assert meta["lfm2.context_length"] == "32768"
    assert meta["lfm2.shortconv.l_cache"] == "3"
    assert meta["tokenizer.ggml.pre"] == "lfm2"
    assert (tiny_llama.n_vocab(), tiny_llama.n_embd()) == (512, 64)
    assert (tiny_llama.token_bos(), tiny_llama.token_eos()) == (1, 7)
    assert tiny_llama.chat_format == "chat_template.default"


def test_tokenizer_round_trips_any_utf8(tiny_llama: llama_cpp.Llama) -> None:
    data = UTF8_TEXT.encode()
    tokens = tiny_llama.tokenize(data, add_bos=False)
    assert tiny_llama.detokenize(tokens) == data
    assert tiny_llama.tokenize(data)[0] == 1  # BOS
    assert len(tiny_llama.tokenize(b" the", add_bos=False)) < 4  # merges give words multi-byte tokens


def test_special_tokens_parse_only_when_asked(tiny_llama: llama_cpp.Llama) -> None:
    text = b"<|im_start|>user<|im_end|>"
    user = tiny_llama.tokenize(b"user", add_bos=False)
    assert tiny_llama.tokenize(text, add_bos=False, special=True) == [6, *user, 7]
    assert 6 not in tiny_llama.tokenize(text, add_bos=False, special=False)


def test_chat_template_renders_chatml_with_one_bos(tiny_llama: llama_cpp.Llama) -> None:
    template = tiny_llama.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template=template, eos_token="<|im_end|>", bos_token="<|startoftext|>")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    prompt = formatter(messages=messages).prompt  # type: ignore[arg-type]
    assert prompt == (
        "<|startoftext|><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    tokens = tiny_llama.tokenize(prompt.encode(), add_bos=False, special=True)
    assert tokens.count(1) == 1 and tokens[0] == 1


def test_greedy_chat_completion_is_deterministic_and_finite(tiny_llama: llama_cpp.Llama) -> None:
    messages = [{"role": "user", "content": UTF8_TEXT}]
    # pytest turns warnings into errors, so a doubled BOS (llama-cpp-python warns) would fail here.
    replies = [
        tiny_llama.create_chat_completion(messages=messages, temperature=0, max_tokens=16)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    choice = replies[0]["choices"][0]  # type: ignore[index]
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert replies[0]["choices"][0]["message"] == replies[1]["choices"][0]["message"]  # type: ignore[index]
    logits = tiny_llama.scores[: tiny_llama.n_tokens]
    assert np.isfinite(logits).all() and logits.std() > 0


def test_json_schema_output_starts_a_json_object(tiny_llama: llama_cpp.Llama) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "kind": {"enum": ["a", "b"]}},
        "required": ["ok", "kind"],
        "additionalProperties": False,
    }
    reply = tiny_llama.create_chat_completion(
        messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format={"type": "json_object", "schema": schema},
        temperature=0,
        max_tokens=32,
    )
    choice = reply["choices"][0]  # type: ignore[index]
    content = choice["message"]["content"]
    assert isinstance(content, str) and content.lstrip().startswith("{")
    assert choice["finish_reason"] in ("stop", "length")
    if choice["finish_reason"] == "stop":
        assert set(json.loads(content)) == {"ok", "kind"}


# ---------------------------------------------------------------- a real shape


@pytest.fixture
def model_350m(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "lfm2-350m.gguf"
    yield path
    path.unlink(missing_ok=True)  # 229 MB: do not leave it in pytest's kept temp dirs


@pytest.mark.slow
def test_350m_preset_has_official_size_and_runs_in_llama_cpp(model_350m: Path) -> None:
    start = time.perf_counter()
    write_tiny_model(model_350m, preset="350m")
    elapsed = time.perf_counter() - start
    size = model_350m.stat().st_size
    print(f"350m model: {size} bytes in {elapsed:.2f} s")
    assert abs(size - 229e6) < 0.02 * 229e6  # official LFM2-350M-Q4_K_M.gguf is ~229 MB
    assert elapsed < 30

    reader = gguf.GGUFReader(model_350m)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert (kinds["token_embd.weight"], kinds["blk.0.ffn_down.weight"]) == ("Q6_K", "Q6_K")
    assert (kinds["blk.0.shortconv.in_proj.weight"], kinds["blk.2.attn_q.weight"]) == ("Q4_K", "Q4_K")
    assert "blk.2.shortconv.conv.weight" not in kinds and "blk.3.attn_q.weight" not in kinds
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    weights = gguf.dequantize(embd.data[:100], embd.tensor_type)
    assert np.isfinite(weights).all() and 0.015 < weights.std() < 0.025

    llama = llama_cpp.Llama(model_path=str(model_350m), n_ctx=256, verbose=False, logits_all=True)
    try:
        assert (llama.n_vocab(), llama.n_embd()) == (65536, 1024)
        tokens = llama.tokenize(UTF8_TEXT.encode())
        assert llama.detokenize(tokens[1:]) == UTF8_TEXT.encode()
        llama.eval(tokens)
        logits = llama.scores[: llama.n_tokens]
        assert np.isfinite(logits).all() and logits.std() > 0
    finally:
        llama.close()
