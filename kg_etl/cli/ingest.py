"""``kg-etl ingest``: options in, the pipeline run, a live progress display, and the end-of-run summary."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from kg_etl import defaults as d
from kg_etl.cli.app import EXIT_INTERRUPTED, EXIT_PARTIAL, chunk_options, cli, err, graph_options, open_graph, say
from kg_etl.errors import ConfigError, KgEtlError

__all__ = ["ingest"]


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--batch",
    "batch_size",
    default=d.BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Chunks per graph transaction.",
)
@click.option(
    "--model",
    default=d.DEFAULT_MODEL,
    show_default=True,
    envvar="KG_ETL_MODEL",
    help="Model name from `kg-etl models list`, or a path to a .gguf file [env KG_ETL_MODEL].",
)
@click.option(
    "--model-for",
    "model_for",
    multiple=True,
    metavar="EXTRACTOR=MODEL",
    envvar="KG_ETL_MODEL_FOR",
    help="Run one extractor on another model, e.g. validate=lfm2-700m-q4_k_m (repeatable). Models then run "
    "one after the other, each over every file, and only one is loaded at a time "
    "[env KG_ETL_MODEL_FOR, space-separated].",
)
@click.option(
    "--keep-models",
    is_flag=True,
    help="With --model-for: keep every model loaded at once (faster, needs memory for all of them).",
)
@click.option(
    "--preset",
    type=click.Choice(["fast", "balanced", "quality"]),
    envvar="KG_ETL_PRESET",
    help="Models for a CPU laptop (fast), a 16 GB GPU (balanced) or a big GPU (quality); --model and "
    "--model-for override parts of it. `kg-etl models presets` lists them [env KG_ETL_PRESET].",
)
@click.option("--no-download", is_flag=True, help="Never download a model; fail if it is not on disk.")
@click.option(
    "--llm",
    "llm_url",
    metavar="URL",
    envvar="KG_ETL_LLM",
    help="Use a model server you run instead of a GGUF: any OpenAI-compatible endpoint, e.g. "
    "http://localhost:8080/v1 (llama-server, vLLM, Ollama's /v1); needs kg-etl[server] [env KG_ETL_LLM].",
)
@click.option(
    "--llm-model",
    envvar="KG_ETL_LLM_MODEL",
    help="The server's model to use [env KG_ETL_LLM_MODEL; default: the first it lists].",
)
@click.option(
    "--llm-concurrency",
    default=d.LLM_CONCURRENCY,
    show_default=True,
    type=click.IntRange(1, 256),
    envvar="KG_ETL_LLM_CONCURRENCY",
    help="Requests sent to the server at once [env KG_ETL_LLM_CONCURRENCY].",
)
@click.option(
    "--llm-api-key",
    envvar="KG_ETL_LLM_API_KEY",
    hidden=True,  # a key belongs in the environment, not in shell history: KG_ETL_LLM_API_KEY
    help="The server's API key [env KG_ETL_LLM_API_KEY].",
)
@click.option(
    "--extract",
    default=",".join(d.EXTRACTOR_NAMES),
    show_default=True,
    help="Comma-separated extractors to run (validate = the QA validation pass; schema = your --schema, which "
    "runs whenever a schema is given).",
)
@click.option(
    "--categories",
    help=f"Comma-separated category labels to classify into [default: {', '.join(d.DEFAULT_CATEGORIES)}].",
)
@click.option(
    "--schema",
    "user_schema",
    metavar="FILE|NAME|MODULE:NAME",
    envvar="KG_ETL_SCHEMA",
    help="Also extract your own node and relationship types: a TOML schema, a shipped example (papers, "
    "contracts) or a Python GraphSchema / pydantic model as package.module:NAME [env KG_ETL_SCHEMA].",
)
@click.option(
    "--gpu-layers",
    default=d.GPU_LAYERS,
    show_default=True,
    type=click.IntRange(-1),
    help="Layers to offload to the GPU: -1 all, 0 none (CPU).",
)
@click.option("--gpu", "require_gpu", is_flag=True, help="Fail unless this build can offload to a GPU.")
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    envvar="KG_ETL_PARALLEL",
    help=f"Sequences decoded together in one llama.cpp context (1 = one at a time) [env KG_ETL_PARALLEL; "
    f"default: {d.PARALLEL} on a GPU, {d.PARALLEL_CPU} on the CPU, where batching measured no faster].",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    envvar="KG_ETL_THREADS",
    help="CPU threads for llama.cpp [env KG_ETL_THREADS; default: the cores idle at start, since threads on "
    "busy cores stall each other].",
)
@click.option(
    "--cpu-repack",
    type=click.Choice(["auto", "on", "off"]),
    default=d.CPU_REPACK,
    show_default=True,
    envvar="KG_ETL_CPU_REPACK",
    help="llama.cpp's repacked CPU weights: auto probes once per machine and model in a child process and "
    "falls back to plain buffers where llama.cpp crashes (its AMX kernels on Intel Xeons) [env KG_ETL_CPU_REPACK].",
)
@click.option(
    "--n-ctx",
    default=d.N_CTX,
    show_default=True,
    type=click.IntRange(512),
    help="The most context a request may take; each is sized to its chunk, instructions and longest reply.",
)
@click.option(
    "--retries",
    default=d.RETRIES,
    show_default=True,
    type=click.IntRange(0, 10),
    help="Re-asks after a reply that does not fit its schema.",
)
@click.option("--deterministic", is_flag=True, help="Greedy decoding (temperature 0): same input, same graph.")
@click.option(
    "--chat-template",
    metavar="NAME|FILE",
    envvar="KG_ETL_CHAT_TEMPLATE",
    help="Prompt format: chatml, lfm2, gemma, llama3, or a Jinja file [env KG_ETL_CHAT_TEMPLATE; default: the "
    "GGUF's own, else its architecture's].",
)
@click.option(
    "--password",
    "pdf_password",
    envvar="KG_ETL_PDF_PASSWORD",
    help="Password for encrypted PDFs [env KG_ETL_PDF_PASSWORD]; per-file ones go in the config's [passwords] table.",
)
@chunk_options
@click.option(
    "--retry-failed/--no-retry-failed",
    default=True,
    show_default=True,
    help="Try documents recorded as failed again (most failures are transient; broken files fail fast).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JSON report of the run (per document: pages, chunks, extractions, failures, seconds).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    envvar="RAY_ADDRESS",
    help="Run the models on a Ray cluster: local (a Ray started for this run), auto (the cluster this machine "
    "belongs to) or an address; needs kg-etl[ray] [env RAY_ADDRESS].",
)
@click.option(
    "--ray-actors",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="With --ray: model actors, each holding one resident model for the whole run.",
)
@click.option(
    "--ray-gpus-per-actor",
    type=click.FloatRange(0),
    help="With --ray: GPUs per actor, fractional to share one (0.25: four actors per GPU) [default: 1 where "
    "the cluster has GPUs, else 0].",
)
@click.option(
    "--ray-cpus-per-actor",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="With --ray: CPUs each actor reserves; its llama.cpp threads, unless --threads says otherwise.",
)
@graph_options
@click.pass_context
def ingest(
    ctx: click.Context,
    /,
    inputs: tuple[Path, ...],
    report_path: Path | None,
    quiet: bool,
    ray_address: str | None,
    ray_actors: int,
    ray_gpus_per_actor: float | None,
    ray_cpus_per_actor: float,
    **options: Any,
) -> None:
    """Read PDFs (files or folders), extract knowledge with the local model, and write it to the graph.

    Re-running on the same files is safe: finished documents are skipped, interrupted ones resume. Ctrl-C
    stops after the batch in hand is committed (twice: at once, the open batch rolled back).

    With --ray, the models run on Ray actors (on many GPUs or machines) and several documents are worked on
    at once; the graph is the same as one machine's, written by this process alone.

    Exit codes: 0 all done; 1 some documents or chunks failed; 2 bad options; 3 nothing could be done
    (graph unreachable, model missing); 4 the model's worker process crashed (rerun to resume); 130 interrupted.

    \b
    Examples:
      kg-etl ingest pdfs/ --batch 10
      kg-etl ingest report.pdf --model lfm2-350m-q4_k_m --extract facts,qa,validate
      kg-etl ingest pdfs/ --model-for validate=lfm2-700m-q4_k_m --report run.json
      kg-etl ingest papers/ --schema papers --extract facts,qa,validate
      kg-etl ingest pdfs/ --ray auto --ray-actors 4 --ray-gpus-per-actor 0.25
      kg-etl ingest pdfs/ --llm http://localhost:8080/v1 --llm-concurrency 8
    """
    graph = {k: options.pop(k) for k in ("neo4j_uri", "neo4j_username", "neo4j_password", "neo4j_database")}
    settings = _settings(ctx, options, ctx.find_root().obj["passwords"])
    if ray_address and settings.llm_url:
        raise click.UsageError("--ray and --llm: a model server scales on its own; raise --llm-concurrency instead")
    run_ingest, report = _runner(ray_address, ray_actors, ray_gpus_per_actor, ray_cpus_per_actor)
    _check_before_start(settings, report_path)
    try:
        with open_graph(**graph) as conn, _IngestDisplay(quiet) as display, _GracefulStop() as stop:
            run_ingest(
                list(inputs), conn, settings, on_event=display.on_event, should_stop=stop.requested, report=report
            )
    except BaseException as e:
        # Whatever ends the run, the summary and the report say what was done up to then.
        report.interrupted = report.interrupted or isinstance(e, KeyboardInterrupt | click.exceptions.Abort)
        report.error = str(e) if isinstance(e, KgEtlError) else type(e).__name__
        raise
    finally:
        _finish(report, report_path)
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not report.ok:
        sys.exit(EXIT_PARTIAL)


def _runner(address: str | None, actors: int, gpus: float | None, cpus: float) -> tuple[Callable[..., Any], Any]:
    """The ingest to run (one machine's, or on Ray) and its report; Ray is imported only when asked for.

    Raises:
        ConfigError: --ray without Ray installed (one line, before anything starts).
    """
    if not address:
        from kg_etl.pipeline import IngestReport
        from kg_etl.pipeline import ingest as run_ingest

        return run_ingest, IngestReport()
    from kg_etl.distributed import RayIngestReport, RayOptions, ingest_on_ray, require_ray

    require_ray()
    options = RayOptions(address=address, actors=actors, gpus_per_actor=gpus, cpus_per_actor=cpus)
    return functools.partial(_on_ray, ingest_on_ray, options), RayIngestReport()


def _on_ray(run: Callable[..., Any], options: Any, inputs: list[Path], graph: Any, settings: Any, **kw: Any) -> Any:
    return run(inputs, graph, settings, options, **kw)


def _settings(ctx: click.Context, options: dict[str, Any], passwords: dict[str, str]) -> Any:
    """The options as ``IngestSettings``; a value the settings refuse is a usage error (exit 2)."""
    from pydantic import SecretStr, ValidationError

    from kg_etl.config import IngestSettings
    from kg_etl.llm.presets import PRESETS

    options = dict(options)
    password, categories, preset = options.pop("pdf_password"), options.pop("categories"), options.pop("preset")
    api_key = options.pop("llm_api_key")
    extractor_models = _extractor_models(options.pop("model_for"))
    if preset is not None:  # the preset's models, where the user named none of their own
        chosen = PRESETS[preset]
        if ctx.get_parameter_source("model") is click.core.ParameterSource.DEFAULT:
            options["model"] = chosen.model
        extractor_models = chosen.extractor_models | extractor_models
    renamed = {
        "keep_models_loaded": options.pop("keep_models"),
        "download": not options.pop("no_download"),
        "extractors": _split(options.pop("extract")),
    }
    values = {
        **options,
        **renamed,
        "extractor_models": extractor_models,
        "categories": _split(categories) if categories is not None else d.DEFAULT_CATEGORIES,
        "password": SecretStr(password) if password else None,
        "llm_api_key": SecretStr(api_key) if api_key else None,
        "passwords": passwords,
    }
    try:
        return IngestSettings(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "options"
        raise click.UsageError(f"{where}: {first['msg']}") from e


def _check_before_start(settings: Any, report_path: Path | None) -> None:
    """What can be known wrong before anything starts: extractors, the report's folder, the models on disk.

    A missing model is downloaded here (or refused, offline), before the graph server starts and the PDFs
    are read: a first run then fails in seconds, with the line that says how to get the model.
    """
    from kg_etl.pipeline import check_models, check_settings

    try:
        check_settings(settings)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    if report_path is not None:
        folder = report_path.resolve().parent
        if not folder.is_dir():
            raise click.UsageError(f"--report {report_path}: the folder {folder} does not exist")
    try:
        check_models(settings)
    except ConfigError as e:  # --chat-template names nothing usable
        raise click.UsageError(str(e)) from e


def _finish(report: Any, report_path: Path | None) -> None:
    """The end-of-run summary and the --report file, on every way out of an ingest."""
    if report_path is not None:
        try:
            report_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
        except OSError as e:
            say(f"cannot write the report {report_path}: {e.strerror or e}")
    _print_summary(report)


def _extractor_models(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--model-for`` values as extractor name -> model."""
    chosen: dict[str, str] = {}
    for pair in pairs:
        name, _, ref = (part.strip() for part in pair.partition("="))
        if name not in d.KNOWN_EXTRACTORS or not ref:
            raise click.BadParameter(
                f"{pair!r}: expected EXTRACTOR=MODEL with EXTRACTOR one of {','.join(d.KNOWN_EXTRACTORS)}",
                param_hint="--model-for",
            )
        chosen[name] = ref
    return chosen


def _split(values: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in values.split(",") if v.strip())


class _GracefulStop:
    """First Ctrl-C: finish the batch in hand, then stop. Second: stop at once (the open batch rolls back)."""

    def __init__(self) -> None:
        self._requested = False
        self._previous: Any = None

    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        say("stopping after the current batch (Ctrl-C again to stop now)")

    def __enter__(self) -> _GracefulStop:
        # Signal handlers can only be set from the main thread (CliRunner in a thread, for one).
        with contextlib.suppress(ValueError):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _IngestDisplay:
    """A rich progress display fed by pipeline events: files, pages of each file in hand, what the model does.

    A pages bar moves with every reply (a batch's share of its pages), so its ETA is there from the first
    replies and stays current; the stage (which extractors, the validation pass, the document summary) and
    the generation speed have columns of their own. One machine works on one file at a time, so one pages bar
    shows; a run on Ray shows one for each file in hand. Notices print above it, through the same console.
    """

    def __init__(self, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[stage]}"),
            console=err(),
            disable=quiet,
            speed_estimate_period=600,  # a slow CPU run may take minutes per batch: keep that history
        )
        self.files = self.progress.add_task("files", total=None, stage="", speed="")
        self.pages: dict[str, Any] = {}  # file in hand -> its pages bar

    def __enter__(self) -> _IngestDisplay:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def on_event(self, event: Any) -> None:
        from kg_etl.models import text_of

        p = self.progress
        speed: dict[str, Any] = {"speed": f"{event.tokens_per_s:.0f} tok/s"} if event.tokens_per_s else {}
        bar = self.pages.get(event.path)
        if event.kind == "notice":
            p.console.print(text_of(event.message), highlight=False, markup=False, soft_wrap=True)
        elif event.kind == "run_start":
            p.update(self.files, total=event.total)
        elif event.kind == "document_start":
            self._start(event.path, event.total)
        elif event.kind == "document_end":
            p.advance(self.files)
            if bar is not None:
                p.remove_task(self.pages.pop(event.path))
        elif bar is None:  # a file whose pages are all done, its bar gone while its last steps run
            return
        elif event.kind == "stage":
            p.update(bar, stage=event.message)
        elif event.kind == "progress":
            moved: dict[str, Any] = {"completed": event.done} if event.done is not None else {}
            p.update(bar, stage=event.message, **moved, **speed)
        elif event.kind == "batch":
            p.update(bar, completed=event.done, **speed)

    def _start(self, path: str, pages: int | None) -> None:
        """A pages bar for a file now in hand; the bars of files whose pages are all done go (a warm-up pass
        over a file ends without a document_end)."""
        p = self.progress
        for other, bar in list(self.pages.items()):
            if other == path or p.tasks[p.task_ids.index(bar)].finished:
                p.remove_task(self.pages.pop(other))
        name = _label(path)
        self.pages[path] = p.add_task(name, total=pages, stage="", speed="")


def _label(path: str) -> str:
    """A file's name as a bar's label: printable, and short enough to leave room for the bar."""
    from kg_etl.models import text_of

    return text_of(Path(path).name)[:40]


def _print_summary(report: Any) -> None:
    done = sum(d.status == "done" for d in report.documents)
    skipped = sum(d.status == "skipped" for d in report.documents)
    failed = [d for d in report.documents if d.status == "failed"]
    chunks = sum(d.chunks_written for d in report.documents)
    bad_chunks = sum(d.chunks_failed for d in report.documents)
    pairs, valid = sum(d.qa_pairs for d in report.documents), sum(d.qa_valid for d in report.documents)
    where = "the GPU" if report.gpu_offload else "the CPU"
    server = next((m.server for m in report.models if m.server), None)
    models = "no model loaded" if not report.models else f"{report.model} on {server or where}"
    if len(report.models) > 1:
        models += f" (at most {report.max_resident_models} loaded at once)"
    memory = f"peak memory {report.peak_rss_mb or 0:.0f} MiB here"
    if report.worker_peak_rss_mb:
        memory += f", {report.worker_peak_rss_mb:.0f} MiB in the model worker"
    qa = f"{valid} of {pairs} QA pairs valid, " if pairs else ""
    say(
        f"{done} ingested, {skipped} already done, {len(failed)} failed; {chunks} chunks written "
        f"({bad_chunks} with failed extractions), {qa}{report.llm_calls} LLM calls, {report.seconds:.1f} s; "
        f"{models}; {memory}"
    )
    _print_actors(report)
    for doc in failed:
        say(f"  failed: {doc.path}: {doc.reason}")
    for doc in report.documents:
        for f in doc.failures[:3]:
            say(f"  {Path(doc.path).name}: {f.extractor} failed after {f.attempts} tries: {f.error}")
    if report.interrupted:
        say("interrupted: rerun the same command to resume")


def _print_actors(report: Any) -> None:
    """With --ray: each model actor's node, speed, loads and restarts."""
    actors = getattr(report, "actors", None)
    if not actors:
        return
    say(f"Ray ({report.cluster}): {len(actors)} model actors on {report.nodes} node(s), {report.lanes} documents "
        f"at once, {report.actor_restarts} actor restarts")  # fmt: skip
    for a in actors:
        speed = f"{a.tokens_per_s:.1f} tok/s" if a.tokens_per_s else "no replies"
        say(f"  actor {a.index + 1} ({a.model}) on {a.node or '?'}: {a.calls} replies, {speed}, "
            f"loaded {a.loads}x, {a.restarts} restarts")  # fmt: skip
