"""One full query against a model server that adds latency to every call.

Measures how much of the model latency the pipeline hides by running calls concurrently:
a real OpenAI-compatible HTTP server on 127.0.0.1 (scripted replies, `--delay` seconds per call,
default 0.3) serves the LLM of a caption-mode query on coco-mini (k = 20, 2 questions per
candidate, alpha = 3: 1 reason + 1 propose + 40 verify + 3 judge calls). The ratio
wall time / (calls x delay) says how far under the sum of its calls the query runs.

    python bench/query_concurrency.py [--delay 0.3] [--concurrency 1 4 8 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' local server helper
from local_servers import serve_json  # noqa: E402

COCO = ROOT.parent / "shared" / "data" / "coco-mini"

REPLIES = {
    "reason": json.dumps({"edits": [{"type": "addition", "text": "an oven"}, {"type": "removal", "text": "cake"}],
                          "descriptions": {"core": "an oven", "attributes": "a kitchen with an oven",
                                           "full": "A kitchen with an oven."}}),
    "propose": json.dumps({"questions": [{"question": "Is there an oven?", "expected": "yes"},
                                         {"question": "Is there a cake?", "expected": "no"}]}),
    "verify": "Yes",
    "judge": "ANSWER: No",
}


def stage_of(prompt: str) -> str:
    if "atomic edits" in prompt:
        return "reason"
    if "yes/no question" in prompt:
        return "propose"
    return "judge" if "ANSWER: Yes" in prompt else "verify"


class SlowServer:
    """OpenAI-compatible /v1/chat/completions that sleeps `delay` s per request, many at a time."""

    def __init__(self, delay: float):
        self.delay = delay
        self.calls = 0
        self.lock = threading.Lock()
        self.httpd, self.url = serve_json(self.reply)

    def reply(self, method: str, path: str, data: bytes) -> tuple[int, bytes]:
        body = json.loads(data)
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        prompt = body["messages"][-1]["content"]
        prompt = prompt if isinstance(prompt, str) else prompt[-1]["text"]
        return 200, json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": REPLIES[stage_of(prompt)]}}],
        }).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()

    import logging

    logging.disable(logging.WARNING)
    from lensgraph.graphs.runner import open_context, run_query
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.pipeline.settings import load_settings

    server = SlowServer(args.delay)
    with tempfile.TemporaryDirectory() as tmp:
        base = load_settings(db=Path(tmp) / "db", clip="ViT-B-32:none", text_encoder="st:all-MiniLM-L6-v2")
        searcher = Searcher.open(base, create=True)
        searcher.add_folder(COCO / "images", captions=COCO / "gallery_captions.jsonl")
        query = json.loads((COCO / "cir_dev.json").read_text())[0]
        ref = str(COCO / "images" / f"{query['reference_img_id']:012d}.jpg")
        print(f"one caption-mode query, k=20, alpha=3, {args.delay * 1000:.0f} ms per model call\n")
        print("| max concurrency | calls | sum of call latencies (s) | wall (s) | wall / sum |")
        print("|---|---|---|---|---|")
        for concurrency in args.concurrency:
            settings = base.model_copy(update={
                "llm": "openai:bench", "llm_base_url": server.url, "vlm": "caption", "k": 20, "alpha": 3,
                "tau": 1.0, "no_cache": True, "max_concurrency": concurrency,
            })
            ctx = open_context(settings, searcher)
            before = server.calls
            started = time.perf_counter()
            state = run_query(ctx, query["relative_caption"], ref)
            wall = time.perf_counter() - started
            calls = server.calls - before
            assert calls == sum(t["calls"] for t in state["trace"])
            total = calls * args.delay
            print(f"| {concurrency} | {calls} | {total:.1f} | {wall:.2f} | {wall / total:.2f} |")


if __name__ == "__main__":
    main()
