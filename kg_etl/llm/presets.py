"""Named presets: which model each extractor runs on, for a CPU laptop, a 16 GB GPU, or a big GPU.

Models run one at a time (``kg_etl.llm.pool``), so a preset needs the memory of its largest model, not of
all of them: the model file, its KV cache (``--parallel`` 8 sequences of ``--n-ctx`` 8192 tokens: ~0.85 GiB
for the 350M-1.2B shapes at 12 KiB a token, ~1.2 GiB for 2.6B) and llama.cpp's compute buffer (~0.3 GiB).
LiquidAI's Extract models (documents to JSON) take the extractors that read a chunk into a schema; an
instruct model writes summaries and questions; the RAG model, trained to answer from given context, is the
validation pass, which answers each question from its chunk alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["PRESETS", "Preset"]

_EXTRACTING = ("facts", "taxonomy", "categories", "keywords")


@dataclass(frozen=True)
class Preset:
    """A main model and the extractors that run on others; ``memory`` is what the largest one needs."""

    name: str
    description: str
    model: str
    extractor_models: dict[str, str] = field(default_factory=dict)
    memory: str = ""

    def summary(self) -> str:
        """Which extractors run on which model, the main model's first."""
        by_model: dict[str, list[str]] = {self.model: []}
        for extractor, model in self.extractor_models.items():
            by_model.setdefault(model, []).append(extractor)
        return "; ".join(f"{model}: {', '.join(names) or 'the rest'}" for model, names in by_model.items())


def _each(names: tuple[str, ...], model: str) -> dict[str, str]:
    return dict.fromkeys(names, model)


PRESETS = MappingProxyType(
    {
        "fast": Preset(
            "fast",
            "a CPU laptop (8 GB of RAM)",
            model="lfm2.5-350m-q4_k_m",
            extractor_models=_each(_EXTRACTING, "lfm2-350m-extract-q4_k_m"),
            memory="~1.4 GB RAM (0.23 GB model)",
        ),
        "balanced": Preset(
            "balanced",
            "a 16 GB GPU, or a desktop CPU",
            model="lfm2.5-1.2b-instruct-q4_k_m",
            extractor_models=_each(_EXTRACTING, "lfm2-1.2b-extract-q4_k_m") | {"validate": "lfm2-1.2b-rag-q4_k_m"},
            memory="~1.9 GB (0.73 GB model)",
        ),
        "quality": Preset(
            "quality",
            "a large GPU (24 GB or more)",
            model="lfm2-2.6b-q8_0",
            extractor_models=_each(_EXTRACTING, "lfm2-1.2b-extract-q8_0") | {"validate": "lfm2-1.2b-rag-q8_0"},
            memory="~4.3 GB (2.8 GB model)",
        ),
    }
)
