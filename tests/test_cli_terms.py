"""The CLI as photo-search tools have it (rclip's conventions): the query as an argument, an image
path first as the reference, +/- and weighted terms, -f for pipes, inline previews."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MINILM, RANDOM_CLIP, run_main
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.adapters.cli.preview import inline_image, protocol
from lensgraph.adapters.cli.terms import Term, parse_query

PHOTOS = Path(__file__).parent / "fixtures" / "photos"


def test_terms_reference_signs_and_weights():
    q = parse_query([str(PHOTOS / "000000126107.jpg"), "with a dog"])
    assert q.reference == PHOTOS / "000000126107.jpg" and q.terms == (Term("with a dog"),) and q.plain
    q = parse_query(["beach", "-", "people", "+", "2:sunset", "0.5:boats"])
    assert q.reference is None and q.terms == (Term("beach"), Term("people", -1.0), Term("sunset", 2.0), Term("boats", 0.5))
    assert q.instruction() == "beach, sunset, boats, without people"
    assert parse_query(["missing.jpg", "x"]).terms[0].text == "missing.jpg"  # not a file: just words
    with pytest.raises(LensgraphError, match="Only negative"):
        parse_query(["-", "people"])
    with pytest.raises(LensgraphError, match="Empty query term"):
        parse_query(["2: "])


@pytest.fixture(scope="module")
def photo_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("cli-db")
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "run.py"), "index", str(PHOTOS), "--db", str(db), "--clip", RANDOM_CLIP,
                    "--text-encoder", MINILM, "--captions", str(PHOTOS / "captions.jsonl")], check=True, capture_output=True)
    return ["--db", str(db), "--clip", RANDOM_CLIP, "--text-encoder", MINILM, "--tau", "1"]


def test_query_as_argument_and_paths_for_pipes(photo_db, capsys):
    code, out, err = run_main(capsys, "search", "two people riding horses along a beach", *photo_db, "-f", "--k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and Path(lines[0]).name == "000000214753.jpg" and all(Path(p).is_file() for p in lines)
    code, flag, _ = run_main(capsys, "search", "--text", "two people riding horses along a beach", *photo_db, "-f", "--k", "3")
    assert flag == out  # the flag keeps working


def test_an_image_path_first_is_the_reference(photo_db, capsys):
    ref = PHOTOS / "000000126107.jpg"
    code, out, err = run_main(capsys, "search", str(ref), "with horses", *photo_db, "--k", "4", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["reference"] == str(ref) and data["instruction"] == "with horses"
    assert ref.name not in [Path(r["path"]).name for r in data["results"]]  # the reference is never returned


def test_minus_terms_move_away_in_embedding_space(photo_db, capsys):
    _, plain, _ = run_main(capsys, "search", "an animal", *photo_db, "-f", "--k", "12")
    code, out, err = run_main(capsys, "search", "an animal", "-", "a dog tied to a hydrant", *photo_db, "--k", "12", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [t["weight"] for t in data["query"]["terms"]] == [1.0, -1.0]
    ranked = [Path(r["path"]).name for r in data["results"]]
    assert ranked.index("000000377575.jpg") > [Path(p).name for p in plain.splitlines()].index("000000377575.jpg")
    assert ranked[-1] == "000000377575.jpg"  # the dog by the hydrant goes last


def test_inline_previews_only_where_the_terminal_draws_them():
    photo = PHOTOS / "000000214753.jpg"
    assert protocol({"TERM": "xterm-256color"}, tty=True) is None
    assert protocol({"KITTY_WINDOW_ID": "1"}, tty=False) is None  # piped: never escape codes
    assert protocol({"TERM": "xterm-kitty"}, tty=True) == "kitty" and protocol({"TERM_PROGRAM": "iTerm.app"}, tty=True) == "iterm"
    kitty = inline_image(photo, "kitty")
    assert kitty.startswith("\033_Ga=T,f=100,") and kitty.endswith("\033\\")
    iterm = inline_image(photo, "iterm")
    assert iterm.startswith("\033]1337;File=inline=1;") and iterm.endswith("\a")
    assert inline_image(PHOTOS / "captions.jsonl", "kitty") is None  # not an image: no thumbnail
