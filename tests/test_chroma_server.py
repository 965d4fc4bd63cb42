"""The same index through a real Chroma server (`chroma run` on 127.0.0.1) gives the same results."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RANDOM_CLIP, cli_json
from local_servers import free_port, wait_port


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory):
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = free_port()
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(tmp_path_factory.mktemp("server-db")), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 60)
    except RuntimeError as e:
        proc.kill()
        pytest.fail(f"chroma run did not start: {e}")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_server_and_embedded_agree(tmp_path, chroma_url, coco, gallery_ids):
    folder = tmp_path / "few"
    folder.mkdir()
    for name in gallery_ids[:10]:
        (folder / f"{name}.jpg").symlink_to(coco / "images" / f"{name}.jpg")
    captions = tmp_path / "captions.jsonl"
    captions.write_text((coco / "gallery_captions.jsonl").read_text())
    common = ["--clip", RANDOM_CLIP, "--captions", str(captions), "--text-encoder", "st:all-MiniLM-L6-v2"]
    served = cli_json("index", str(folder), "--chroma-url", chroma_url, *common)
    assert served["report"]["added"] == 10 and served["report"]["captions_added"] == 10
    assert served["index"]["location"] == chroma_url
    embedded = cli_json("index", str(folder), "--db", str(tmp_path / "db"), *common)
    assert embedded["report"]["added"] == 10
    query = ["search", "--text", "people at a table", "--k", "5"]
    a = cli_json(*query, "--chroma-url", chroma_url)["results"]
    b = cli_json(*query, "--db", str(tmp_path / "db"))["results"]
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], rel=1e-5)
    again = cli_json("index", str(folder), "--chroma-url", chroma_url, *common)
    assert (again["report"]["added"], again["report"]["unchanged"]) == (0, 10)
