"""Chat templates: the GGUF's own, one the user names (``--chat-template NAME|FILE``), or one kg-etl knows
for the model's architecture when the file carries none.

llama-cpp-python falls back to the llama-2 format, in silence, for a GGUF without
``tokenizer.chat_template``: a model trained on another format then reads garbled prompts. So kg-etl
never uses that fallback. Gemma's format has no system role: its system prompt goes into the first user
turn, as Google's own template does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from kg_etl.errors import ConfigError, ModelError

__all__ = ["BUILT_IN", "chat_template_for"]

_CHATML = r"""{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"""

_LFM2 = "{{- bos_token -}}" + _CHATML

_GEMMA = r"""{{- bos_token -}}
{%- set system = messages[0]['content'] + '\n\n' if messages[0]['role'] == 'system' else '' -%}
{%- for message in messages if message['role'] != 'system' -%}
{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
{{- '<start_of_turn>' + role + '\n' + (system if loop.first else '') + message['content'] + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"""

_LLAMA3 = r"""{{- bos_token -}}
{%- for message in messages -%}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"""

BUILT_IN: Mapping[str, str] = MappingProxyType({"chatml": _CHATML, "lfm2": _LFM2, "gemma": _GEMMA, "llama3": _LLAMA3})
# What a GGUF of each architecture was trained to read, where the file itself says nothing.
_BY_ARCHITECTURE = MappingProxyType(
    {"lfm2": "lfm2", "lfm2moe": "lfm2", "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma"}
)


def chat_template_for(metadata: Mapping[str, str], chosen: str | None, model: str) -> str:
    """The Jinja template to render prompts with.

    Args:
        metadata: the GGUF's metadata (``tokenizer.chat_template``, ``general.architecture``).
        chosen: ``--chat-template``: a built-in name or a file; it wins over the file's own.
        model: the model's file name, for messages.

    Raises:
        ConfigError: ``chosen`` is neither a built-in name nor a readable file.
        ModelError: nothing to go by: no template in the file and an architecture kg-etl does not know.
    """
    if chosen:
        return _chosen(chosen)
    own = metadata.get("tokenizer.chat_template")
    if own:
        return own
    architecture = metadata.get("general.architecture", "unknown")
    name = _BY_ARCHITECTURE.get(architecture)
    if name is None:
        raise ModelError(
            f"{model}: the GGUF has no chat template and kg-etl knows none for its architecture {architecture!r}; "
            f"pass --chat-template with one of {', '.join(BUILT_IN)} or a Jinja template file"
        )
    return BUILT_IN[name]


def _chosen(chosen: str) -> str:
    if chosen in BUILT_IN:
        return BUILT_IN[chosen]
    path = Path(chosen).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"--chat-template {chosen}: neither a built-in ({', '.join(BUILT_IN)}) nor a readable file ({e})"
        ) from e
