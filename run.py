"""lensgraph command line: `python run.py COMMAND` or `lensgraph COMMAND`.

A thin layer: parse flags into Settings, call pipeline/, render what it returns.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from pipeline.errors import LensgraphError
from pipeline.settings import load_settings

app = typer.Typer(
    help="Find images from language: index a folder of photos, then search it by text or by example.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

IndexOpt = Annotated[Optional[str], typer.Option("--index", help="Index name inside the database [default: default].")]
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="Embedded Chroma database folder [default: ~/.local/share/lensgraph/db].")]
UrlOpt = Annotated[Optional[str], typer.Option("--chroma-url", help="Use a Chroma server, e.g. http://127.0.0.1:8000.")]
ClipOpt = Annotated[
    Optional[str],
    typer.Option("--clip", help="CLIP MODEL:PRETRAINED, a checkpoint (MODEL:/path), local-dir:/path, or MODEL:none (random, tests only)."),
]
TextEncOpt = Annotated[Optional[str], typer.Option("--text-encoder", help="Caption encoder: 'clip' or 'st:NAME_OR_PATH'.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]


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


@app.command()
def index(
    folder: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    index: IndexOpt = None,
    db: DbOpt = None,
    chroma_url: UrlOpt = None,
    clip: ClipOpt = None,
    captions: Annotated[Optional[Path], typer.Option("--captions", help='JSONL of {"id"|"path", "caption"} to import into the caption channel.')] = None,
    text_encoder: TextEncOpt = None,
    prune: Annotated[bool, typer.Option("--prune", help="Remove indexed images whose files are gone.")] = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per model batch.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decoding threads.")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Add the images under FOLDER to an index (incremental: unchanged files are skipped)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pipeline.searcher import Searcher

    _setup_logging(verbose)
    if not folder.is_dir():
        raise LensgraphError(f"{folder} is not a folder. Give the folder of images to index.")
    settings = load_settings(
        index=index, db=db, chroma_url=chroma_url, clip=clip, text_encoder=text_encoder, batch_size=batch_size, workers=workers
    )
    searcher = Searcher.open(settings, create=True)
    _ = searcher.clip  # load (and warn about random weights) before the progress bar starts
    columns = (
        TextColumn("[bold]indexing"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=as_json, disable=as_json) as bar:
        task = bar.add_task("index", total=None, rate="")
        clock: dict[str, float] = {}

        def progress(done: int, total: int) -> None:
            import time

            clock.setdefault("start", time.perf_counter())
            elapsed = time.perf_counter() - clock["start"]
            rate = f"{done / elapsed:.1f} images/s" if elapsed > 0 and done else ""
            bar.update(task, completed=done, total=total, rate=rate)

        report = searcher.add_folder(folder, captions=captions, prune=prune, progress=progress)
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
    if captions:
        out.print(f"captions: {report.captions_added} embedded, {report.captions_unchanged} unchanged, "
                  f"{len(report.captions_unmatched)} matched no indexed image")
    if report.missing and not report.pruned:
        out.print(f"[yellow]{report.missing} indexed images are no longer on disk; --prune removes them.[/]")
    out.print(f"{info.images} images, {info.captions} captions in {info.location}")


@app.command()
def search(
    text: Annotated[Optional[str], typer.Option("--text", "-t", help="What to look for.")] = None,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="A reference image: find similar ones (it is excluded).")] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="How many results.")] = 10,
    tau: Annotated[Optional[float], typer.Option("--tau", min=0.0, max=1.0, help="Caption-channel weight (1 = captions only).")] = None,
    index: IndexOpt = None,
    db: DbOpt = None,
    chroma_url: UrlOpt = None,
    clip: ClipOpt = None,
    text_encoder: TextEncOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Search an index by text, by a reference image, or both."""
    from pipeline.searcher import Searcher

    _setup_logging(verbose)
    if ref is not None and not ref.is_file():
        raise LensgraphError(f"Reference image {ref} does not exist.")
    settings = load_settings(index=index, db=db, chroma_url=chroma_url, clip=clip, text_encoder=text_encoder, tau=tau)
    searcher = Searcher.open(settings)
    hits = searcher.search(text=text, ref=ref, k=k)
    if as_json:
        out.print_json(json.dumps({"query": {"text": text, "ref": str(ref) if ref else None, "k": k},
                                   "results": [asdict(h) for h in hits]}))
        return
    table = Table(title=f"{len(hits)} results" + (f" for {text!r}" if text else ""), title_justify="left")
    table.add_column("#", justify="right", min_width=2)
    table.add_column("score", justify="right", min_width=5)
    table.add_column("image", overflow="fold")
    table.add_column("caption", overflow="ellipsis", no_wrap=True, max_width=40)
    for rank, h in enumerate(hits, 1):
        table.add_row(str(rank), f"{h.score:.3f}", h.path or h.id, h.caption or "")
    out.print(table)


@app.command()
def info(
    index: IndexOpt = None,
    db: DbOpt = None,
    chroma_url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an index: image and caption counts, encoders, dimensions, location; and the other indexes."""
    from pipeline.index import GalleryIndex, connect, list_indexes

    _setup_logging(False)
    settings = load_settings(index=index, db=db, chroma_url=chroma_url)
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
