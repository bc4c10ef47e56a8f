"""``kg-etl eval``: what the extractors really extract, as numbers (WebNLG triples, and the gold set)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kg_etl import defaults as d
from kg_etl.cli.app import add_row, cli, err, out, say, table

__all__ = ["evaluate"]

F = TypeVar("F", bound=Callable[..., Any])


def _model_options(command: F) -> F:
    """The options that say which model runs and how, as ``kg-etl ingest`` has them."""
    options = [
        click.option(
            "--model",
            default=d.DEFAULT_MODEL,
            show_default=True,
            envvar="KG_ETL_MODEL",
            help="Model name from `kg-etl models list`, or a path to a .gguf file [env KG_ETL_MODEL].",
        ),
        click.option("--no-download", is_flag=True, help="Never download a model; fail if it is not on disk."),
        click.option(
            "--gpu-layers", default=d.GPU_LAYERS, show_default=True, type=click.IntRange(-1),
            help="Layers to offload to the GPU: -1 all, 0 none (CPU).",
        ),
        click.option("--parallel", type=click.IntRange(1, 64), envvar="KG_ETL_PARALLEL",
                     help="Sequences decoded together [default: as ingest].",),
        click.option("--threads", type=click.IntRange(1), envvar="KG_ETL_THREADS", help="CPU threads for llama.cpp."),
        click.option("--cpu-repack", type=click.Choice(["auto", "on", "off"]), default=d.CPU_REPACK,
                     envvar="KG_ETL_CPU_REPACK", help="llama.cpp's repacked CPU weights (see ingest)."),
        click.option("--retries", default=d.RETRIES, show_default=True, type=click.IntRange(0, 10),
                     help="Re-asks after a reply that does not fit its schema."),
        click.option("--deterministic/--sampled", default=True, show_default=True,
                     help="Greedy decoding, so two runs of the same model give the same scores."),
        click.option("--chat-template", metavar="NAME|FILE", envvar="KG_ETL_CHAT_TEMPLATE",
                     help="Prompt format: chatml, lfm2, gemma, llama3, or a Jinja file (see ingest)."),
        click.option("--batch", "batch_size", default=d.BATCH_SIZE, show_default=True, type=click.IntRange(1, 1000),
                     help="Texts sent to the model together (as ingest's chunks per batch)."),
        click.option("--limit", type=click.IntRange(1), help="Only the first N entries."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table."),
        click.option("--quiet", "-q", is_flag=True, help="No progress display."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@cli.group("eval")
def evaluate() -> None:
    """Measure what the extractors extract: triples against WebNLG, everything against a gold set.

    Both run the ingest's own prompts, grammar, retries and batching on one model, without a graph or a
    cache, and report the scores with time and tokens per text, so models and presets can be compared on
    your own machine.
    """


@evaluate.command("webnlg")
@click.argument("benchmark", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write DIR/candidates.xml (the challenge's format, for its official script) and DIR/scores.json.",
)
@_model_options
def webnlg(benchmark: Path, out_dir: Path | None, **options: Any) -> None:
    """The facts extractor's triples against a WebNLG 2020 text-to-RDF file (its <lex> texts and <mtriple>s).

    Scores: precision, recall and F1 under the challenge's matching types (strict, exact, partial, type)
    and whole triples.

    \b
    Example:
      kg-etl eval webnlg webnlg2020_text2rdf_en_dev.xml --model lfm2-1.2b-q4_k_m --out eval/
    """
    from kg_etl.eval.webnlg import read_webnlg, run_webnlg, write_candidates

    as_json, quiet, limit = options.pop("as_json"), options.pop("quiet"), options.pop("limit")
    entries = read_webnlg(benchmark)[:limit]
    with _model(options, ["facts"]) as model, _Progress(quiet, "entries") as progress:
        report = run_webnlg(model, entries, on_progress=progress.update)
    if out_dir is not None:
        write_candidates(entries, report.candidates, out_dir / "candidates.xml")
        (out_dir / "scores.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    if as_json:
        summary = {
            "model": report.model,
            "entries": report.entries,
            "scores": {name: s.model_dump() for name, s in report.scores.items()},
            "seconds": report.figures.seconds,
        }
        click.echo(json.dumps(summary, indent=2))
        return
    grid = table("match", "precision", "recall", "F1")
    for name, scores in report.scores.items():
        add_row(grid, name, f"{scores.precision:.3f}", f"{scores.recall:.3f}", f"{scores.f1:.3f}")
    out().print(grid)
    _print_cost(report.figures, report.outcomes.model_dump(), report.failures)


@evaluate.command("gold")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write DIR/gold.json: every score and figure.",
)
@click.option("--categories", help="Comma-separated category labels [default: ingest's].")
@_model_options
def gold(folder: Path | None, out_dir: Path | None, categories: str | None, **options: Any) -> None:
    """Every extractor and the validation pass against a gold set (default: the one kg-etl ships).

    A gold set is a folder of TOML documents, each a text with its gold facts, categories, taxonomy
    paths, keywords, and questions it does and does not answer (see the shipped set's README).

    \b
    Examples:
      kg-etl eval gold --model lfm2-1.2b-q4_k_m
      kg-etl eval gold my_gold/ --model lfm2-350m-q4_k_m --json
    """
    from kg_etl.eval.gold import default_gold_dir, load_gold, run_gold

    as_json, quiet, limit = options.pop("as_json"), options.pop("quiet"), options.pop("limit")
    documents = load_gold(folder or default_gold_dir())[:limit]
    labels = tuple(c.strip() for c in categories.split(",") if c.strip()) if categories else d.DEFAULT_CATEGORIES
    with _model(options, list(d.EXTRACTOR_NAMES)) as model, _Progress(quiet, "documents") as progress:
        report = run_gold(model, documents, labels, on_progress=progress.update)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gold.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    s = report.scores
    grid = table("metric", "value")
    rows = [
        ("facts extracted", s.facts),
        ("facts supported (lexical)", s.facts_supported_lexical),
        ("facts supported (judge)", s.facts_supported_judge),
        *((f"triples vs gold, {name} F1", sc.f1) for name, sc in s.triples.items()),
        ("category accuracy (first label)", s.category_accuracy),
        ("taxonomy edge F1", s.taxonomy_edge_f1),
        ("taxonomy node F1", s.taxonomy_node_f1),
        ("keyword precision", s.keyword_precision),
        ("QA pairs", s.qa_pairs),
        ("QA evidence quoted verbatim", s.qa_evidence_verbatim),
        ("QA round-trip agreement", s.qa_round_trip),
        ("QA pairs judged valid", s.qa_valid),
        ("QA near-duplicate questions", s.qa_near_duplicates),
        ("judge: answerable gold questions right", s.judge_answerable_correct),
        ("judge: unanswerable gold questions refused", s.judge_unanswerable_refused),
    ]
    for name, value in rows:
        add_row(grid, name, "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else value)
    out().print(grid)
    outcomes = {
        key: sum(getattr(o, key) for o in s.outcomes.values()) for key in ("first_try", "after_retries", "failed")
    }
    _print_cost(report.figures, outcomes, report.failures)


def _model(options: dict[str, Any], extractors: list[str]) -> Any:
    """The evaluation's model, from the options (a value the settings refuse is a usage error)."""
    from pydantic import ValidationError

    from kg_etl.config import IngestSettings
    from kg_etl.eval.session import EvalModel

    download = not options.pop("no_download")
    values = {**options, "download": download, "extractors": tuple(extractors)}
    try:
        settings = IngestSettings(**values)
    except ValidationError as e:
        first = e.errors()[0]
        raise click.UsageError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from e
    return EvalModel(settings, notify=lambda message: say(message))


def _print_cost(figures: Any, outcomes: dict[str, int], failures: list[Any]) -> None:
    say(
        f"{figures.model}: {figures.texts} texts in {figures.seconds:.1f} s "
        f"({figures.seconds_per_text:.2f} s and {figures.prompt_tokens_per_text:.0f} prompt tokens per text; "
        f"{figures.llm_calls} LLM calls, {figures.completion_tokens} tokens generated; model load "
        f"{figures.load_seconds:.1f} s). Replies: {outcomes['first_try']} valid at once, "
        f"{outcomes['after_retries']} after retries, {outcomes['failed']} failed."
    )
    for failure in failures[:3]:  # the commonest reasons; --json or --out has them all, with a raw reply each
        say(f"  {failure.count} x {failure.extractor}: {failure.error}")


class _Progress:
    """A progress bar on stderr (none with --quiet or when stderr is not a terminal)."""

    def __init__(self, quiet: bool, unit: str) -> None:
        self.quiet, self.unit = quiet or not err().is_terminal, unit
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if not self.quiet:
            from rich.progress import Progress

            self._bar = Progress(console=err(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.unit, total=None)
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
