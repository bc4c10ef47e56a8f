"""Random-weight LFM2 GGUF models that real llama.cpp loads, for tests and benchmarks.

No model hub is reachable from the machines this project is developed on, so tests cannot fetch real
LFM2 weights. ``write_tiny_model`` writes a model with the LFM2 architecture, a byte-level BPE vocabulary,
the LFM2 special tokens and ChatML chat template, and random weights: useless for quality, faithful for
loading, tokenising, chat formatting, grammar-constrained sampling, speed and memory.

``"tiny"`` is a few hundred KB and written in milliseconds. The other presets carry the public LFM2 shapes,
quantised like Q4_K_M, so file sizes, memory use and speed match the official GGUF files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

try:
    import gguf
except ImportError as e:  # a test-and-benchmark helper: the runtime never imports it
    raise ImportError("kg_etl.testing writes GGUF files with the gguf package: pip install 'kg-etl[bench]'") from e

__all__ = ["PRESETS", "ModelShape", "write_tiny_model"]

_F32Array = npt.NDArray[np.float32]
_U8Array = npt.NDArray[np.uint8]
_QType = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters of one LFM2 model; layers not in ``attention_layers`` are short convolutions."""

    n_layer: int
    attention_layers: tuple[int, ...]
    hidden: int
    ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    quant: Literal["Q8_0", "Q4_K_M"]

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_head


_ATTN_16 = (2, 5, 8, 10, 12, 14)

# Fields in order: layers, attention layers, hidden, ff, heads, KV heads, vocabulary, quantisation.
PRESETS: Mapping[str, ModelShape] = MappingProxyType(
    {
        "tiny": ModelShape(4, (1, 3), 64, 128, 4, 2, 512, "Q8_0"),
        "350m": ModelShape(16, _ATTN_16, 1024, 4608, 16, 8, 65536, "Q4_K_M"),
        "700m": ModelShape(16, _ATTN_16, 1536, 6912, 24, 8, 65536, "Q4_K_M"),
        "1.2b": ModelShape(16, _ATTN_16, 2048, 8192, 32, 8, 65536, "Q4_K_M"),
        "2.6b": ModelShape(30, (2, 6, 10, 14, 18, 21, 24, 27), 2048, 10752, 32, 8, 65536, "Q4_K_M"),
    }
)

# LFM2's own special tokens, in its ids 0..13, so prompts rendered for the real model tokenize alike.
_SPECIAL_TOKENS = (
    "<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|fim_pre|>", "<|fim_mid|>", "<|fim_suf|>",
    "<|im_start|>", "<|im_end|>", "<|tool_list_start|>", "<|tool_list_end|>",
    "<|tool_call_start|>", "<|tool_call_end|>", "<|tool_response_start|>", "<|tool_response_end|>",
)  # fmt: skip
_PAD_ID, _BOS_ID, _EOS_ID = 0, 1, 7

# LFM2's ChatML turns without its tool-calling branches: one BOS, then <|im_start|>role\n...<|im_end|>\n.
_CHAT_TEMPLATE = r"""{{- bos_token -}}
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\n' -}}
{%- if message['content'] is string -%}{{- message['content'] -}}
{%- else -%}{{- message['content'] | tojson -}}{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"""

_WEIGHT_STD = 0.02  # the usual init scale: keeps random activations far from overflow
# Big tensors repeat a pool of quantised blocks instead of drawing GBs of random numbers; a prime block
# count keeps consecutive rows distinct (rows are a multiple of 8 or 2 blocks long).
_POOL_BLOCKS = {32: 2039, 256: 1021}


@dataclass(frozen=True)
class _TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, row length), the reverse of ggml's ne
    qtype: _QType


def write_tiny_model(
    path: str | os.PathLike[str],
    preset: str = "tiny",
    seed: int = 0,
    context_length: int = 32768,
    *,
    chat_template: bool = True,
) -> Path:
    """Write a random-weight LFM2 GGUF; the same preset and seed give the same bytes.

    Args:
        path: the file to write; parent directories are created. It appears only when complete.
        preset: a key of ``PRESETS``.
        seed: seeds the weights (the vocabulary and metadata do not depend on it).
        context_length: the ``lfm2.context_length`` the model advertises.
        chat_template: write ``tokenizer.chat_template`` (the LFM2 one); False leaves it out, as some GGUFs do.

    Returns:
        The path written.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    shape = PRESETS[preset]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".incomplete")
    try:
        _write(partial, shape, preset, np.random.default_rng(seed), context_length, chat_template)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _write(
    path: Path, shape: ModelShape, preset: str, rng: np.random.Generator, context_length: int, chat_template: bool
) -> None:
    writer = gguf.GGUFWriter(path, "lfm2")
    try:
        _add_hparams(writer, shape, preset, context_length)
        _add_tokenizer(writer, shape.n_vocab, chat_template)
        specs = list(_tensor_specs(shape))
        for spec in specs:
            _add_tensor_info(writer, spec)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # Streamed one tensor at a time so that a 2.6B model never sits in memory whole.
        for spec in specs:
            writer.write_tensor_data(_tensor_data(rng, spec))
    finally:
        writer.close()


def _add_hparams(writer: gguf.GGUFWriter, shape: ModelShape, preset: str, context_length: int) -> None:
    writer.add_name(f"kg-etl random LFM2 {preset}")
    writer.add_file_type(_file_type(shape))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(context_length)
    writer.add_embedding_length(shape.hidden)
    writer.add_feed_forward_length(shape.ff)
    writer.add_block_count(shape.n_layer)
    writer.add_head_count(shape.n_head)
    # llama.cpp tells conv layers from attention layers by a KV head count of 0.
    writer.add_head_count_kv([shape.n_head_kv if i in shape.attention_layers else 0 for i in range(shape.n_layer)])
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_shortconv_l_cache(3)
    writer.add_vocab_size(shape.n_vocab)


def _file_type(shape: ModelShape) -> int:
    if shape.quant == "Q8_0":
        return int(gguf.LlamaFileType.MOSTLY_Q8_0)
    return int(gguf.LlamaFileType.MOSTLY_Q4_K_M)


# ---------------------------------------------------------------- vocabulary


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, the alphabet of byte-level BPE token texts."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in mapping)
    for n, b in enumerate(shifted):
        mapping[b] = chr(256 + n)
    return mapping


def _merges(byte_chars: dict[int, str], count: int) -> list[tuple[str, str]]:
    """``count`` BPE merges that grow words over common letters and the space, breadth first.

    Any text still tokenizes through the byte tokens; the merges give ordinary words multi-byte tokens
    (as in a trained vocabulary) and fill the vocabulary to the real size at no cost.
    """
    alphabet = [byte_chars[b] for b in b" etaoinshrdlcumwfgypbvkjxqz"]
    seen, level = set(alphabet), alphabet
    merges: list[tuple[str, str]] = []
    while True:
        grown = []
        for left in level:
            for right in alphabet:
                if len(merges) == count:
                    return merges
                if left + right not in seen:
                    seen.add(left + right)
                    grown.append(left + right)
                    merges.append((left, right))
        level = grown


def _add_tokenizer(writer: gguf.GGUFWriter, n_vocab: int, chat_template: bool) -> None:
    byte_chars = _byte_to_unicode()
    merges = _merges(byte_chars, n_vocab - len(_SPECIAL_TOKENS) - 256)
    tokens = [*_SPECIAL_TOKENS, *(byte_chars[b] for b in range(256)), *(a + b for a, b in merges)]
    types = [gguf.TokenType.CONTROL] * len(_SPECIAL_TOKENS)
    types += [gguf.TokenType.NORMAL] * (len(tokens) - len(_SPECIAL_TOKENS))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("lfm2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in merges])
    writer.add_bos_token_id(_BOS_ID)
    writer.add_eos_token_id(_EOS_ID)
    writer.add_pad_token_id(_PAD_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template:
        writer.add_chat_template(_CHAT_TEMPLATE)


# ---------------------------------------------------------------- tensors


def _tensor_specs(shape: ModelShape) -> Iterator[_TensorSpec]:
    d, kv = shape.hidden, shape.n_head_kv * shape.head_dim
    # Tied output: llama.cpp's Q4_K_M gives the embedding Q6_K because it doubles as the output matrix.
    yield _matrix(shape, "token_embd.weight", (shape.n_vocab, d), more_bits=True)
    yield _TensorSpec("token_embd_norm.weight", (d,), _QType.F32)  # LFM2's final norm, by that name
    attention_seen = 0
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        yield _TensorSpec(f"{blk}.attn_norm.weight", (d,), _QType.F32)
        if i in shape.attention_layers:
            v_more = _use_more_bits(attention_seen, len(shape.attention_layers))
            attention_seen += 1
            yield _matrix(shape, f"{blk}.attn_q.weight", (d, d))
            yield _matrix(shape, f"{blk}.attn_k.weight", (kv, d))
            yield _matrix(shape, f"{blk}.attn_v.weight", (kv, d), more_bits=v_more)
            yield _matrix(shape, f"{blk}.attn_output.weight", (d, d))
            yield _TensorSpec(f"{blk}.attn_q_norm.weight", (shape.head_dim,), _QType.F32)
            yield _TensorSpec(f"{blk}.attn_k_norm.weight", (shape.head_dim,), _QType.F32)
        else:
            yield _TensorSpec(f"{blk}.shortconv.conv.weight", (d, 3), _QType.F32)
            yield _matrix(shape, f"{blk}.shortconv.in_proj.weight", (3 * d, d))
            yield _matrix(shape, f"{blk}.shortconv.out_proj.weight", (d, d))
        yield _TensorSpec(f"{blk}.ffn_norm.weight", (d,), _QType.F32)
        yield _matrix(shape, f"{blk}.ffn_gate.weight", (shape.ff, d))
        yield _matrix(shape, f"{blk}.ffn_up.weight", (shape.ff, d))
        more = _use_more_bits(i, shape.n_layer)
        yield _matrix(shape, f"{blk}.ffn_down.weight", (d, shape.ff), more_bits=more)


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's Q4_K_M rule for which layers' attn_v / ffn_down get Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _matrix(shape: ModelShape, name: str, dims: tuple[int, int], more_bits: bool = False) -> _TensorSpec:
    row = dims[1]
    if shape.quant == "Q4_K_M" and row % 256 == 0:
        return _TensorSpec(name, dims, _QType.Q6_K if more_bits else _QType.Q4_K)
    # llama.cpp falls back to legacy 32-blocks when a row does not fit K-quants' 256.
    if row % 32 == 0:
        return _TensorSpec(name, dims, _QType.Q8_0)
    return _TensorSpec(name, dims, _QType.F32)


def _add_tensor_info(writer: gguf.GGUFWriter, spec: _TensorSpec) -> None:
    if spec.qtype == _QType.F32:
        nbytes = 4 * int(np.prod(spec.shape))
        writer.add_tensor_info(spec.name, spec.shape, np.dtype(np.float32), nbytes)
        return
    byte_shape = gguf.quant_shape_to_byte_shape(spec.shape, spec.qtype)
    nbytes = int(np.prod(byte_shape))
    writer.add_tensor_info(spec.name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=spec.qtype)


def _tensor_data(rng: np.random.Generator, spec: _TensorSpec) -> npt.NDArray[Any]:
    if spec.name.endswith("norm.weight"):
        return np.ones(spec.shape, dtype=np.float32)  # RMS norm gains start at 1, as in training
    if spec.qtype == _QType.F32:
        return (rng.standard_normal(spec.shape, dtype=np.float32) * _WEIGHT_STD).astype(np.float32)
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[spec.qtype]
    n_blocks = int(np.prod(spec.shape)) // block_size
    pool = _quantize(_normal_blocks(rng, min(n_blocks, _POOL_BLOCKS[block_size]), block_size), spec.qtype)
    blocks = np.resize(pool, (n_blocks, block_bytes))  # np.resize repeats the pool cyclically
    return blocks.reshape(gguf.quant_shape_to_byte_shape(spec.shape, spec.qtype))


def _normal_blocks(rng: np.random.Generator, n_blocks: int, block_size: int) -> _F32Array:
    values = rng.standard_normal((n_blocks, block_size), dtype=np.float32) * np.float32(_WEIGHT_STD)
    return values.astype(np.float32)


# ---------------------------------------------------------------- quantisation


def _quantize(blocks: _F32Array, qtype: _QType) -> _U8Array:
    """Quantise ``(n_blocks, block_size)`` floats to ``(n_blocks, block_bytes)`` GGML blocks."""
    if qtype == _QType.Q4_K:
        return _quantize_q4_k(blocks)
    if qtype == _QType.Q6_K:
        return _quantize_q6_k(blocks)
    # gguf-py implements the 32-element formats but not the K-quants.
    quantized: _U8Array = gguf.quantize(blocks, qtype)
    return quantized


def _f16(values: _F32Array) -> _F32Array:
    """Round to float16 and back: block scales are stored as f16, so integer codes must use that value."""
    return values.astype(np.float16).astype(np.float32)


def _safe_div(num: _F32Array, den: _F32Array) -> _F32Array:
    out: _F32Array = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return out


def _quantize_q4_k(blocks: _F32Array) -> _U8Array:
    """Q4_K: per 32-element sub-block ``x = d*sc*q - dmin*m``, q in 0..15, sc and m 6-bit."""
    n = blocks.shape[0]
    sub = blocks.reshape(n, 8, 32)
    low = np.minimum(sub.min(axis=2), 0)  # the offset is subtracted, so it must be >= 0
    scale, offset = (sub.max(axis=2) - low) / 15, -low
    d, dmin = _f16(scale.max(axis=1) / 63), _f16(offset.max(axis=1) / 63)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), 0, 63).astype(np.uint8)
    m = np.clip(np.rint(_safe_div(offset, dmin[:, None])), 0, 63).astype(np.uint8)
    step = (d[:, None] * sc)[..., None]
    shifted = sub + (dmin[:, None] * m)[..., None]
    q = np.clip(np.rint(_safe_div(shifted, np.broadcast_to(step, sub.shape))), 0, 15).astype(np.uint8)
    # Sub-blocks 2j and 2j+1 share 32 bytes: low nibbles then high nibbles.
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(n, 128)
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), _pack_q4_k_scales(sc, m), qs], axis=1)


def _pack_q4_k_scales(sc: _U8Array, m: _U8Array) -> _U8Array:
    """ggml's 12-byte layout: 6-bit sc/m of sub-blocks 0-3 whole, 4-7 split into low nibbles and top bits."""
    head_sc = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    head_m = (m[:, :4] & 0x3F) | ((m[:, 4:] >> 4) << 6)
    tail = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return np.concatenate([head_sc, head_m, tail], axis=1).astype(np.uint8)


def _quantize_q6_k(blocks: _F32Array) -> _U8Array:
    """Q6_K: per 16-element sub-block ``x = d*sc*(q - 32)``, q in 0..63, sc a signed byte."""
    n = blocks.shape[0]
    sub = blocks.reshape(n, 16, 16)
    scale = np.abs(sub).max(axis=2) / 31
    d = _f16(scale.max(axis=1) / 127)
    sc = np.clip(np.rint(_safe_div(scale, d[:, None])), 0, 127).astype(np.int8)
    step = np.broadcast_to((d[:, None] * sc)[..., None], sub.shape).astype(np.float32)
    q = (np.clip(np.rint(_safe_div(sub, step)), -32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)
    # Each 128-value half: quarters 0/1 in low nibbles of ql, 2/3 in high nibbles; top 2 bits go to qh.
    low = q & 0xF
    ql = np.concatenate([low[:, :, 0] | low[:, :, 2] << 4, low[:, :, 1] | low[:, :, 3] << 4], axis=2)
    qh = (q[:, :, 0] >> 4) | (q[:, :, 1] >> 4) << 2 | (q[:, :, 2] >> 4) << 4 | (q[:, :, 3] >> 4) << 6
    parts = [ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8), _f16_bytes(d)]
    return np.concatenate(parts, axis=1).astype(np.uint8)


def _f16_bytes(values: _F32Array) -> _U8Array:
    return values.astype("<f2").view(np.uint8).reshape(-1, 2)
