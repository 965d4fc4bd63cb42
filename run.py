"""lensgraph command line: `python run.py COMMAND` or `lensgraph COMMAND`.

A thin layer: parse flags into Settings, call pipeline/, render what it returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.adapters.cli.options import ENCODERS, LOCATION, RUN, JsonOpt, VerboseOpt, run_options
from lensgraph.pipeline.settings import load_settings

app = typer.Typer(
    help="Find images from language: index a folder of photos, then search it by text or by example.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

def _setup_logging(verbose: bool) -> None:
    if not verbose:  # model-loading bars from huggingface libraries; ours is enough
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    handler = RichHandler(console=err, show_time=False, show_path=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("lensgraph").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("root", "httpx", "chromadb", "sentence_transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        logging.getLogger().setLevel(logging.ERROR)
        logging.getLogger("lensgraph").setLevel(logging.WARNING)


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool, *more: str, unit: str = "images"):
    """Rich progress bars on stderr with a rate; yields the (done, total) callback the library
    takes, or one callback per label when several labels are given."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=quiet, disable=quiet) as bar:

        def callback(name: str, what: str):
            task = bar.add_task(name, total=None, rate="")
            started: list[float] = []

            def update(done: int, total: int) -> None:
                started or started.append(time.perf_counter())
                elapsed = time.perf_counter() - started[0]
                rate = f"{done / elapsed:.1f} {what}/s" if elapsed > 0 and done else ""
                bar.update(task, completed=done, total=total, rate=rate)

            return update

        if not more:
            yield callback(label, unit)
        else:
            yield [callback(label, "images")] + [callback(name, unit) for name in more]


@app.command()
@run_options(LOCATION, ENCODERS)
def index(
    folder: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    captions: Annotated[Optional[Path], typer.Option("--captions", help='JSONL of {"id"|"path", "caption"} to import into the caption channel.')] = None,
    caption_with: Annotated[
        Optional[str], typer.Option("--caption-with", help="Caption new images with this vision model (openai:MODEL, hf:REPO).")
    ] = None,
    vlm_base_url: Annotated[Optional[str], typer.Option("--vlm-base-url", help="OpenAI-compatible server for --caption-with.")] = None,
    prompts: Annotated[Optional[str], typer.Option("--prompts", help="Prompt set whose caption.txt is used.")] = None,
    no_cache: Annotated[Optional[bool], typer.Option("--no-cache", help="Bypass the model call cache.")] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Remove indexed images whose files are gone.")] = False,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Images per model batch \\[default: 32 on the CPU, 64 on MPS, 128 on CUDA].")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", help="Decoding threads \\[default: 2 on the CPU, one per core up to 8 with a GPU].")] = None,
    use_ray: Annotated[bool, typer.Option(
        "--ray", help="Read and embed in a Ray Data job: a local Ray, or the cluster at --ray-address / RAY_ADDRESS.")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="A running Ray cluster (ray://HEAD:10001); implies --ray.")] = None,
    ray_actors: Annotated[Optional[int], typer.Option(
        "--ray-actors", min=1, help="Embedding actors \\[default: one per GPU, else one].")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    *,
    flags: dict[str, Any],  # the shared options given (run_options)
) -> None:
    """Add the images under FOLDER to an index (incremental: unchanged files are skipped)."""
    from lensgraph.adapters.searcher import Searcher

    _setup_logging(verbose)
    if not folder.is_dir():
        raise LensgraphError(f"{folder} is not a folder. Give the folder of images to index.")
    settings = load_settings(**flags, batch_size=batch_size, workers=workers, vlm_base_url=vlm_base_url, prompts=prompts, no_cache=no_cache)
    searcher = Searcher.open(settings, create=True)
    ray = None
    if use_ray or ray_address:
        from lensgraph.pipeline.ingest.ray_job import RayJob

        ray = RayJob(clip=searcher.index.clip_spec, device=settings.device, runtime=settings.clip_runtime,
                     address=ray_address, actors=ray_actors, batch_size=settings.batch_size or 32)
    with progress_bar("indexing", as_json) as progress:
        report = searcher.add_folder(folder, captions=captions, prune=prune, progress=progress, ray=ray)
    if caption_with:
        with progress_bar("captioning", as_json) as progress:
            captioned = searcher.caption_missing(caption_with, progress)
        report.captions_added += captioned.captions_added
        if not captions:
            report.captions_unchanged = captioned.captions_unchanged
        report.skipped += captioned.skipped
        report.seconds += captioned.seconds
    info = searcher.index.info()
    if as_json:
        out.print_json(json.dumps({"report": asdict(report), "index": asdict(info)}))
        return
    for path, reason in report.skipped:
        err.print(f"[yellow]skipped[/] {path}: {reason}")
    parts = [f"{report.added} added", f"{report.unchanged} unchanged"]
    if report.moved:
        parts.append(f"{report.moved} moved")
    if report.duplicates:
        parts.append(f"{report.duplicates} duplicates")
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped")
    if report.pruned:
        parts.append(f"{report.pruned} removed")
    out.print(f"[bold]{info.name}[/]: {', '.join(parts)} in {report.seconds:.1f}s"
              + (f" ({report.images_per_second:.1f} images/s)" if report.added else ""))
    if captions or caption_with:
        out.print(f"captions: {report.captions_added} embedded, {report.captions_unchanged} unchanged, "
                  f"{len(report.captions_unmatched)} matched no indexed image")
    if report.missing and not report.pruned:
        out.print(f"[yellow]{report.missing} indexed images are no longer on disk; --prune removes them.[/]")
    out.print(f"{info.images} images, {info.captions} captions in {info.location}")


@app.command()
@run_options(RUN)
def search(
    query: Annotated[Optional[list[str]], typer.Argument(
        help='What to look for: "a red bicycle"; an image path first makes it the reference (./cat.jpg "with a dog"); '
             '+/- terms and W: weights combine texts ("beach" - "people", 2:"sunset").', show_default=False)] = None,
    text: Annotated[Optional[str], typer.Option("--text", "-t", help="What to look for, or how the reference should change.")] = None,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="A reference image (never returned). Alone: find similar images.")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", min=0.0, max=1.0,
        help="Drop results whose evidence (mean probability of the expected answers, and the judge's Yes) is below this.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show each stage as it finishes.")] = False,
    paths_only: Annotated[bool, typer.Option("--paths", "-f", help="Print only the result paths, one per line (for pipes).")] = False,
    preview: Annotated[bool, typer.Option("--preview", help="Show thumbnails inline (kitty, iTerm2; ignored elsewhere).")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report of the stages.")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="Write the run manifest (JSON) here.")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    *,
    flags: dict[str, Any],  # the shared options given (run_options)
) -> None:
    """Search an index: by text (text-to-image), by reference + text (composed), or by reference alone."""
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.adapters.cli.terms import Query, Term, parse_query

    _setup_logging(verbose)
    parsed = parse_query(list(query or []), ref)
    terms = list(parsed.terms) + ([Term(text)] if text else [])
    ref = parsed.reference
    if ref is not None and not ref.is_file():
        raise LensgraphError(f"Reference image {ref} does not exist.")
    if not terms and ref is None:
        raise LensgraphError('Give a query ("a red bicycle"), a reference image (./photo.jpg), or both.')
    terms_query = Query(ref, tuple(terms))
    text = terms_query.instruction() or None
    settings = load_settings(**flags)
    searcher = Searcher.open(settings)
    if not text or (not terms_query.plain and ref is None and settings.resolved_stages == "retrieve"):
        # a reference alone (image similarity), or weighted terms without an LLM (combined in embedding space)
        plain_search(searcher, terms, ref, as_json, paths_only, preview)
        return
    state, run_manifest = run_search(searcher, text, ref, explain and not as_json)
    results = [{**asdict(r), "relevance": r.relevance} for r in searcher.results_of(state, threshold=threshold)]
    if manifest:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(run_manifest.data, indent=2, ensure_ascii=False))
    if html:
        from lensgraph.adapters.cli.report import render_html

        paths = {c["id"]: c["path"] for c in state.get("candidates", [])}
        html.write_text(render_html(state, paths), encoding="utf-8")
    if as_json:
        keys = ("instruction", "reference", "reference_id", "caption", "edits", "descriptions", "questions",
                "rankings", "answers", "matches", "probabilities", "verdicts", "trace")
        out.print_json(json.dumps({**{key: state.get(key) for key in keys}, "results": results,
                                   "manifest": run_manifest.data}, ensure_ascii=False))
        return
    show_search(state, results, text, threshold, run_manifest.data["seconds"], paths_only, preview)
    if html and not paths_only:
        out.print(f"report: {html}")


def plain_search(searcher: Any, terms: list, ref: Path | None, as_json: bool, paths_only: bool, preview: bool) -> None:
    """Retrieval without the graph: weighted terms combined in embedding space, or image similarity."""
    k = searcher.settings.k
    if terms:
        hits = searcher.search_texts([t.text for t in terms], k=k, weights=[t.weight for t in terms])
        title = f"{len(hits)} results for " + " ".join(f"{t.weight:+g}:{t.text!r}" for t in terms)
    else:
        hits = searcher.retrieve(ref=ref, k=k)
        title = f"{len(hits)} images like {ref.name}"
    results = [{"rank": n, "id": h.id, "path": h.path, "score": h.score, "caption": h.caption}
               for n, h in enumerate(hits, 1)]
    if as_json:
        query_data = {"ref": str(ref) if ref else None, "terms": [asdict(t) for t in terms], "k": k}
        out.print_json(json.dumps({"query": query_data, "results": results}))
    else:
        show_results(results, title, paths_only, preview)


def run_search(searcher: Any, text: str, ref: Path | None, explain: bool) -> tuple[dict, Any]:
    """The graph on one query, each stage printed as it finishes with --explain; (final state, manifest)."""
    from lensgraph.graphs.runner import Manifest, stream_query

    started = time.perf_counter()
    state: dict = {}
    for stage, update, state in stream_query(searcher.context, text, str(ref) if ref else None):
        if explain:
            out.print(explain_stage(stage, update, state))
    return state, Manifest.build(searcher.settings, searcher.context, state, started)


def show_search(state: dict, results: list[dict], text: str, threshold: float | None, seconds: float,
                paths_only: bool, preview: bool) -> None:
    """A graph search for a terminal: warnings, the results, and what it cost."""
    trace = state.get("trace", [])
    for entry in trace:
        for warning in entry["warnings"]:
            err.print(f"[yellow]warning[/] {warning}", highlight=False)
    dropped = f" ({len(state.get('candidates', [])) - len(results)} below --threshold {threshold})" if threshold is not None else ""
    show_results(results, f"{len(results)} results for {text!r}{dropped}", paths_only, preview)
    if not paths_only:
        out.print(
            f"[dim]{' -> '.join(t['stage'] for t in trace)}: {sum(t['calls'] for t in trace)} model calls in "
            f"{sum(t.get('rounds', 0) for t in trace)} rounds, {sum(t['cache_hits'] for t in trace)} cached, "
            f"{seconds:.1f}s[/]"
        )


def show_results(results: list[dict], title: str, paths_only: bool = False, preview: bool = False) -> None:
    """The results as a table, or as bare paths for pipes (`-f`), with inline thumbnails (`--preview`)."""
    if paths_only:
        for r in results:
            print(r.get("path") or r["id"])
        return
    if preview:
        from lensgraph.adapters.cli.preview import inline_image

        for r in results:
            shown = inline_image(r["path"]) if r.get("path") else None
            if shown:
                sys.stdout.write(shown)
                print(f" {r.get('rank', '')} {Path(r['path']).name}")
        sys.stdout.flush()
    out.print(results_table(results, title))


def results_table(results: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", min_width=2)
    table.add_column("score", justify="right", min_width=5)
    evidence = any(r.get("evidence") for r in results)
    if evidence:
        table.add_column("relevance", justify="right")
        table.add_column("checks", no_wrap=True)
    table.add_column("image", overflow="fold")
    table.add_column("caption", overflow="ellipsis", no_wrap=True, max_width=40)
    for rank, r in enumerate(results, 1):
        cells = [str(rank), f"{r['score']:.3f}"]
        if evidence:
            e = r.get("evidence") or {}
            relevance = e.get("relevance")
            cells += ["" if relevance is None else f"{relevance:.2f}",
                      f"{e.get('passed', 0)}/{len(e.get('questions', []))}" if e else ""]
        table.add_row(*cells, r.get("path") or r["id"], r.get("caption") or "")
    return table


def explain_stage(stage: str, update: dict, state: dict):
    """One stage of --explain: what it produced, the ranking it left, its cost."""
    from rich.panel import Panel
    from rich.text import Text

    body = Text()
    names = {c["id"]: Path(c["path"]).name if c.get("path") else c["id"][:12] for c in state.get("candidates", [])}
    if stage == "caption":
        body.append(f"{update.get('caption')}\n")
    elif stage == "reason":
        for e in update.get("edits", []):
            body.append(f"  {e['type']:<13}{e['text']}\n")
        for d in update.get("descriptions", []):
            body.append(f"  > {d}\n", style="bold")
        for q in update.get("questions", []):
            body.append(f"  ? {q['question']}  (expect {q['expected']})\n")
        for fix in update.get("trace", [{}])[-1].get("fixes", []):
            body.append(f"  fixed: {fix}\n", style="magenta")
    elif stage == "propose":
        for q in update.get("questions", []):
            body.append(f"  {q['question']}  (expect {q['expected']})\n")
    elif stage == "verify":
        questions = state.get("questions", [])
        for cid in update.get("rankings", {}).get("verify", [])[: len(update.get("answers", {}))]:
            probs = update.get("probabilities", {}).get(cid, [])
            checks = ", ".join(
                f"{q['question']} {a or 'failed'}" + ("" if p is None else f" (p {p:.2f})")
                for q, a, p in zip(questions, update.get("answers", {}).get(cid, []), probs + [None] * len(questions)))
            body.append(f"  {names.get(cid, cid[:12])}: {update.get('matches', {}).get(cid, 0)}/{len(questions)} as expected  [{checks}]\n")
    elif stage == "judge":
        for cid, v in update.get("verdicts", {}).items():
            verdict = {True: "Yes", False: "No", None: "unclear"}[v["verdict"]]
            p_yes = "" if v.get("p_yes") is None else f" (p {v['p_yes']:.2f})"
            body.append(f"  {names.get(cid, cid[:12])}: {verdict}{p_yes}\n")
    elif stage == "retrieve" and "descriptions" in update:
        for d in update["descriptions"]:
            body.append(f"  > {d}\n", style="bold")
    ranking = update.get("rankings", {}).get(stage)
    if ranking:
        body.append("  ranking: " + "   ".join(f"#{n} {names.get(i, i[:8])}" for n, i in enumerate(ranking[:10], 1)) + "\n", style="cyan")
    entry = update.get("trace", [{}])[-1]
    for warning in entry.get("warnings", []):
        body.append(f"  warning: {warning}\n", style="yellow")
    subtitle = f"{entry.get('seconds', 0):.2f}s, {entry.get('calls', 0)} calls, {entry.get('cache_hits', 0)} cached"
    if entry.get("prompt_tokens") or entry.get("completion_tokens"):
        subtitle += f", {entry.get('prompt_tokens', 0)} + {entry.get('completion_tokens', 0)} tokens"
    if entry.get("skipped"):
        body.append(f"  left out: {entry['skipped']}\n", style="dim")
    return Panel(body, title=stage, title_align="left", subtitle=subtitle, subtitle_align="right")


@app.command()
@run_options(RUN)
def chat(
    thread: Annotated[Optional[str], typer.Option("--thread", help="Resume this conversation \\[default: a new one].")] = None,
    message: Annotated[Optional[list[str]], typer.Option("--message", "-m", help="Send these messages and exit (repeatable).")] = None,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="A reference image for the thread (kept for later turns).")] = None,
    show: Annotated[int, typer.Option("--show", min=1, help="Results shown per turn.")] = 5,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", min=0.0, max=1.0, help="Drop results whose evidence is below this (as in search).")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    *,
    flags: dict[str, Any],  # the shared options given (run_options)
) -> None:
    """Find an image through a conversation: each message refines the description, which is then
    searched with the same stages as `search` (plan, retrieve, verify, judge, as the models allow)."""
    import uuid

    from lensgraph.adapters.searcher import Searcher

    _setup_logging(verbose)
    if ref is not None and not ref.is_file():
        raise LensgraphError(f"Reference image {ref} does not exist.")
    settings = load_settings(**flags)
    conversation = Searcher.open(settings).chat(thread or uuid.uuid4().hex[:12])
    thread = conversation.thread_id
    turns: list[dict] = []

    def turn(text: str) -> None:
        found = conversation.send(text, ref=ref if not turns else None, threshold=threshold)
        state = found.explanation
        for entry in state.get("trace", []):
            for warning in entry["warnings"]:
                err.print(f"[yellow]warning[/] {warning}", highlight=False)
        results = [{**asdict(r), "relevance": r.relevance} for r in found]
        turns.append({"thread": thread, "round": len(state.get("dialogue", [])), "message": text,
                      "description": state["description"], "results": results})
        if not as_json:
            out.print(f"[bold]round {turns[-1]['round']}[/] [dim](thread {thread})[/]: {state['description']}")
            out.print(results_table(results[:show], f"top {min(show, len(results))}"))

    if message:
        for text in message:
            turn(text)
    else:
        err.print(f"thread {thread}: describe the image you want; an empty line ends. "
                  f"Resume later with --thread {thread}.")
        while True:
            try:
                text = input("> ")
            except EOFError:
                break
            if not text.strip():
                break
            turn(text)
    if as_json:
        out.print_json(json.dumps({"thread": thread, "turns": turns}, ensure_ascii=False))


@app.command(name="eval")
@run_options(RUN)
def evaluate(
    dataset: Annotated[str, typer.Option("--dataset", help="circo, cirr, fashioniq, flickr30k, mscoco, visdial, coco-mini-cir, coco-mini-t2i.")],
    annotations: Annotated[Path, typer.Option("--annotations", help="The benchmark's annotation file or root folder.")],
    images: Annotated[Path, typer.Option("--images", help="The folder its image paths resolve against.")],
    run_dir: Annotated[Path, typer.Option("--out", help="Run folder: metrics, rankings, manifest (resumes if it exists).")],
    split: Annotated[Optional[str], typer.Option("--split", help="Split \\[default: the benchmark's evaluation split].")] = None,
    captions: Annotated[Optional[Path], typer.Option("--captions", help="Gallery captions JSONL (caption mode).")] = None,
    mode: Annotated[str, typer.Option("--mode", help="vision (a VLM verifies) or caption (the LLM reads stored captions).")] = "vision",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N queries (per FashionIQ category).")] = None,
    category: Annotated[Optional[list[str]], typer.Option(
        "--category", help="FashionIQ: dress, shirt or toptee (repeatable) \\[default: all three, each against its own gallery].")] = None,
    keep_reference: Annotated[Optional[bool], typer.Option(
        "--keep-reference/--drop-reference",
        help="Leave the reference image in the ranking or remove it \\[default: the benchmark's protocol: kept for "
             "FashionIQ and CIRCO, removed for CIRR and coco-mini].")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Queries run concurrently.")] = 2,
    redo_degraded: Annotated[bool, typer.Option(
        "--redo-degraded", help="Run again the finished queries where a model call failed for good (a stage fell back).")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    *,
    flags: dict[str, Any],  # the shared options given (run_options)
) -> None:
    """Run a benchmark through the pipeline; metrics after each stage go to OUT/metrics.json."""
    from lensgraph.graphs.chat_evaluation import ChatEvaluation
    from lensgraph.graphs.evaluation import Evaluation
    from lensgraph.pipeline.evaluation.datasets import load_dataset

    _setup_logging(verbose)
    settings = load_settings(**flags)
    options = {"categories": category} if category else {}
    if category and dataset.lower().replace("_", "-") not in ("fashioniq", "fashion-iq", "fiq"):
        raise LensgraphError("--category is for FashionIQ (dress, shirt, toptee).")
    data = load_dataset(dataset, annotations, images, split, **options)
    if data.task == "chat":
        run: Any = ChatEvaluation(settings, data, run_dir)
    else:
        run = Evaluation(settings, data, run_dir, mode, keep_reference=keep_reference, captions=captions)
    with progress_bar("indexing", as_json, "queries", unit="queries") as (index_progress, progress):
        summary = run.run(workers=workers, limit=limit, progress=progress, index_progress=index_progress,
                          redo_degraded=redo_degraded)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(metrics_table({run_dir.name: summary}))
    total = summary["costs_per_query"].get("total", {})
    out.print(f"{summary['queries']} queries, {summary['errors']} failed, {summary['queries_with_warnings']} with "
              f"warnings; per query {total.get('calls', 0):.1f} model calls, {total.get('seconds', 0):.1f}s. "
              f"Written to {run_dir}/")


@app.command()
def submit(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `eval` on a test split.")],
    dataset: Annotated[str, typer.Option("--dataset", help="cirr or circo.")],
    annotations: Annotated[Path, typer.Option("--annotations", help="As given to `eval`.")],
    images: Annotated[Path, typer.Option("--images", help="As given to `eval`.")],
    target: Annotated[Path, typer.Option("--out", help="Output file (CIRR writes FILE and FILE's -subset twin).")],
    split: Annotated[Optional[str], typer.Option("--split", help="Split \\[default: test1 for CIRR, test for CIRCO].")] = None,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Ranking after this stage \\[default: the last].")] = None,
) -> None:
    """Write test-server submission files (CIRR main + subset, CIRCO) from a run's rankings."""
    from lensgraph.pipeline.evaluation.runfiles import read_records
    from lensgraph.pipeline.evaluation.datasets import load_dataset
    from lensgraph.pipeline.evaluation.metrics import check_ids
    from lensgraph.pipeline.evaluation.submission import circo_submission, cirr_submission, cirr_subset_submission, write_json

    name = dataset.lower()
    if name not in ("cirr", "circo"):
        raise LensgraphError("submit writes files for the cirr and circo test servers.")
    data = load_dataset(name, annotations, images, split or ("test1" if name == "cirr" else "test"))
    records = read_records(run_dir)
    if not records:
        raise LensgraphError(f"{run_dir} has no finished queries (rankings.jsonl).")
    pick = stage or next(s for s in ("judge", "verify", "retrieve") if any(s in r["rankings"] for r in records.values()))
    rankings = {qid: r["rankings"].get(pick, []) for qid, r in records.items()}
    try:
        check_ids(rankings.values(), data.images, str(run_dir / "rankings.jsonl"))
    except ValueError as e:
        raise LensgraphError(f"{e}.") from None
    if name == "circo":
        written = [write_json(target, circo_submission(rankings, data.queries))]
    else:
        # the members' order over the whole gallery, kept by eval (older runs: the top-50 cut, checked)
        orders = {qid: (r.get("subset_rankings") or {}).get(pick) or r["rankings"].get(pick, []) for qid, r in records.items()}
        subset = target.with_name(target.stem + "-subset" + target.suffix)
        written = [write_json(target, cirr_submission(rankings, data.queries)),
                   write_json(subset, cirr_subset_submission(orders, data.queries))]
    out.print(f"{len(rankings)} queries ({pick} ranking) -> {', '.join(str(w) for w in written)}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by `eval` (the first is the baseline).")],
    metric: Annotated[Optional[str], typer.Option("--metric", help="Metric for paired differences \\[default: mAP@10 or R@1].")] = None,
    top: Annotated[int, typer.Option("--top", help="Queries shown where runs disagree most.")] = 5,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of each metric per stage per run.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a markdown table (one row per run and stage) and the paired differences.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare run folders: metrics per stage side by side, paired differences with confidence
    intervals, and the queries where the runs disagree most."""
    from lensgraph.pipeline.evaluation.compare import compare_runs, diagnostics_table, load_run, markdown_table, plot_runs

    loaded = [load_run(r) for r in runs]
    result = compare_runs(loaded, metric=metric, top=top)
    if plot:
        plot_runs(loaded, plot)
    if as_json:
        out.print_json(json.dumps(result))
        return
    differences = [
        f"{diff['run']} vs {diff['baseline']} ({diff['stage']}, {diff['metric']}, {diff['n']} paired queries): "
        f"{diff['mean']:+.2f} points, 95% bootstrap CI [{diff['ci'][0]:+.2f}, {diff['ci'][1]:+.2f}]; "
        f"better on {diff['wins']}, worse on {diff['losses']}, same on {diff['ties']} (sign test p = {diff['p_sign']:.3f})"
        for diff in result["differences"]
    ]
    if markdown:  # plain text for pasting: no rich markup or wrapping
        print(markdown_table(loaded), diagnostics_table(loaded, result["diagnostics"]), *differences, sep="\n\n")
        return
    out.print(metrics_table({r.name: r.summary for r in loaded}))
    out.print(diagnostics_table(loaded, result["diagnostics"]), markup=False, highlight=False)
    for line in differences:
        out.print(line)
    for d in result["disagreements"]:
        out.print(f"\n[bold]query {d['id']}[/] ({d.get('kind') or 'no kind'}): {d['text']}")
        for run_name, info in d["runs"].items():
            descriptions = " | ".join(info.get("descriptions") or [])
            out.print(f"  {run_name}: {d['metric']} {info['score']:.2f}  {descriptions[:160]}")
    if plot:
        out.print(f"plot: {plot}")


def metrics_table(summaries: dict[str, dict]) -> Table:
    """Metric rows x (run, stage) columns."""
    from lensgraph.pipeline.evaluation.compare import cost_until

    table = Table(title="metrics (%)", title_justify="left")
    table.add_column("metric", no_wrap=True)
    columns = [(name, stage) for name, s in summaries.items() for stage in s["metrics"]]
    for name, stage in columns:
        table.add_column(f"{name}\n{stage}", justify="right")
    keys = list(dict.fromkeys(k for name, stage in columns for k in summaries[name]["metrics"][stage] if ":" not in k))
    keys += list(dict.fromkeys(k for name, stage in columns for k in summaries[name]["metrics"][stage] if ":" in k))
    for key in keys:
        cells = []
        for name, stage in columns:
            value = summaries[name]["metrics"][stage].get(key)
            cells.append("" if value is None else (f"{value:.0f}" if key.endswith(("n", "skipped")) else f"{value:.1f}"))
        table.add_row(key, *cells)
    costs = [cost_until(summaries[name], stage) for name, stage in columns]  # to produce each column's ranking
    table.add_row("model calls/query", *(f"{c['calls'] + c['cache_hits']:.1f}" for c in costs))
    table.add_row("rounds/query", *(f"{c['rounds']:.1f}" for c in costs))
    table.add_row("from cache/query", *(f"{c['cache_hits']:.1f}" for c in costs))
    table.add_row("seconds/query", *(f"{c['seconds']:.1f}" for c in costs))
    return table


@app.command(name="mcp")
@run_options(RUN)
def mcp_server(
    root: Annotated[
        Optional[list[Path]],
        typer.Option("--root", help="A folder whose images callers may name by path, and index with --allow-indexing (repeatable)."),
    ] = None,
    allow_indexing: Annotated[bool, typer.Option("--allow-indexing", help="Offer the index_images tool (folders inside --root only).")] = False,
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (an MCP host launches this command) or http (streamable HTTP at http://HOST:PORT/mcp).")
    ] = "stdio",
    host: Annotated[str, typer.Option("--host", help="HTTP address. No authentication: keep 127.0.0.1 unless a proxy authenticates.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8000,
    max_k: Annotated[int, typer.Option("--max-k", min=1, max=1000, help="Largest number of results a caller may ask for.")] = 50,
    verbose: VerboseOpt = False,
    *,
    flags: dict[str, Any],  # the shared options given (run_options)
) -> None:
    """Serve an index to AI assistants over the Model Context Protocol (search, describe, info; indexing if allowed)."""
    from lensgraph.adapters.mcp_server import quiet_output, serve
    from lensgraph.adapters.tools import ImageTools, ToolConfig

    quiet_output()  # before any model library is imported: stdout is the protocol in stdio mode
    if transport not in ("stdio", "http"):
        raise LensgraphError(f"--transport is stdio or http, not {transport!r}.")
    settings = load_settings(**flags)
    if not root:
        err.print("[yellow]No --root given:[/] callers can search, but cannot name image files or index folders.")
    config = ToolConfig(roots=tuple(root or ()), allow_indexing=allow_indexing, max_k=max_k)
    serve(ImageTools(settings, config), transport, host, port, log_level="INFO" if verbose else "WARNING")  # type: ignore[arg-type]


@app.command()
@run_options(RUN)
def serve(
    root: Annotated[
        Optional[list[Path]],
        typer.Option("--root", help="A folder whose images the page may show and take as references (repeatable; "
                                    "usually the folders you indexed)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8765,
    token: Annotated[Optional[str], typer.Option(
        "--token", envvar="LENSGRAPH_TOKEN", show_envvar=True,
        help="Require this token on every API request (Bearer header, ?token= or the page's cookie). "
             "Prefer the environment variable: a flag shows in the process list.")] = None,
    max_k: Annotated[int, typer.Option("--max-k", min=1, max=1000, help="Largest number of results a caller may ask for.")] = 50,
    max_upload: Annotated[int, typer.Option(
        "--max-upload", min=1, help="Largest image (bytes) that may be uploaded, shown or thumbnailed.")] = 10_000_000,
    verbose: VerboseOpt = False,
    *,
    flags: dict[str, Any],  # the shared options given (run_options)
) -> None:
    """Serve an index in a browser: a search page at http://HOST:PORT/ and its REST API (/docs)."""
    _setup_logging(verbose)
    try:
        from lensgraph.adapters.web import build_server, describe_binding
    except ImportError as e:
        raise LensgraphError(f"The web app needs the web extra ({e.name} is missing): pip install 'lensgraph[web]'.") from None
    from lensgraph.adapters.tools import ImageTools, ToolConfig

    settings = load_settings(**flags)
    config = ToolConfig(roots=tuple(root or ()), max_k=max_k, max_image_bytes=max_upload)
    server = build_server(ImageTools(settings, config), host, port, token or None, "info" if verbose else "warning")
    if not root:
        err.print("[yellow]No --root given:[/] the page can search, but cannot show images or take them as references. "
                  "Pass --root with the folder you indexed.", highlight=False)
    out.print(describe_binding(host, port, token or None), highlight=False, soft_wrap=True)
    out.file.flush()  # seen at once when stdout is a pipe or a log file
    server.run()


@app.command()
@run_options(LOCATION)
def info(
    as_json: JsonOpt = False,
    *,
    flags: dict[str, Any],  # the shared options given (run_options)
) -> None:
    """Show an index: image and caption counts, encoders, dimensions, location; and the other indexes."""
    from lensgraph.pipeline.store.index import GalleryIndex, connect, list_indexes

    _setup_logging(False)
    settings = load_settings(**flags)
    client = connect(settings)
    details = GalleryIndex.open(settings, client).info()
    others = [n for n in list_indexes(client) if n != details.name]
    if as_json:
        out.print_json(json.dumps({**asdict(details), "other_indexes": others}))
        return
    table = Table(show_header=False, title=f"index {details.name}", title_justify="left")
    rows = [
        ("images", str(details.images)),
        ("captions", str(details.captions)),
        ("CLIP", f"{details.clip} ({details.clip_dim}-d)"),
        ("caption encoder", f"{details.text_encoder} ({details.text_dim}-d)" if details.text_encoder else "none"),
        ("location", details.location),
        ("other indexes", ", ".join(others) or "none"),
    ]
    for row in rows:
        table.add_row(*row)
    out.print(table)


def main() -> None:
    try:
        app()
    except LensgraphError as e:
        err.print(f"[bold red]Error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("Interrupted. An interrupted index resumes where it stopped when run again.")
        sys.exit(130)


if __name__ == "__main__":
    main()
