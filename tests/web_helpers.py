"""Shared pieces of the web app's tests (test_web_api.py, test_web_browser.py); no tests of its own.

A real gallery of the twelve CC BY photos in tests/fixtures/photos (random-weight CLIP, the real
MiniLM caption encoder, real embedded Chroma), copied into an allowed root, plus one indexed image
that lies outside the root; the app served by a real uvicorn server on 127.0.0.1. Where a test needs
the reasoning stages, a scripted model (tests/fakes.py) answers from the stored captions, so verify
and judge really re-rank: the photo whose caption has the planned object rises.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fakes import ScriptedBackend, context, stage_of
from local_servers import free_port

PHOTOS = Path(__file__).parent / "fixtures" / "photos"
HORSES = "000000214753.jpg"  # "Two equestrians riding their horses on the beach together."
BIRD = "000000126107.jpg"    # "A bird that is flying over the sand.": the reference of "with horses"
SECRET = "sk-test-SECRET1234567890"
XSS = '<img src=x onerror="window.__xss=1">'
PLAN = {"edits": [{"type": "addition", "text": "horses"}],
        "descriptions": ["horses on a beach", "two riders on horses at the sea", "a beach"],
        "questions": [{"question": "Are there horses?", "expected": "yes"}]}
MARKUP_PLAN = {**PLAN, "descriptions": PLAN["descriptions"][:2] + [f"a beach {XSS}"]}
"""The plan for a request that says "markup": a description with markup in it (model text is text)."""


@dataclass
class WebGallery:
    searcher: object
    base: Path
    root: Path
    outside: Path
    """An indexed image that lies outside the root."""
    outside_id: str


def build_gallery(base: Path, clip, minilm) -> WebGallery:
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.pipeline.store.index import GalleryIndex
    from lensgraph.pipeline.models.calls import ImageInput
    from lensgraph.pipeline.settings import load_settings

    from conftest import MINILM, RANDOM_CLIP

    root, outside = base / "photos", base / "outside" / "elsewhere.jpg"
    shutil.copytree(PHOTOS, root)
    outside.parent.mkdir()
    with Image.open(PHOTOS / HORSES) as img:  # other bytes, so another id
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(outside, "JPEG", quality=90)
    settings = load_settings(db=base / "db" / "chroma", clip=RANDOM_CLIP, text_encoder=MINILM, tau=1.0, k=8)
    settings = settings.model_copy(update={"openai_api_key": SECRET})  # redaction must know it
    searcher = Searcher(settings, GalleryIndex.create_or_open(settings, RANDOM_CLIP, clip.dim))  # CLIP built once
    searcher.__dict__["clip"], searcher.__dict__["text_encoder"] = clip, minilm
    searcher.add_folder(root, captions=root / "captions.jsonl")
    searcher.add_files([outside])
    outside_id = ImageInput.from_bytes(outside.read_bytes()).id
    searcher.import_captions([{"id": outside_id, "caption": "A mirrored photo of a quiet street."}])
    return WebGallery(searcher, base, root, outside, outside_id)


def script(delay: float):
    """A model that plans "with horses", answers questions and judges from the captions it is given,
    and refines chat descriptions; each verification answer takes `delay` seconds."""

    def answer(request) -> str:
        prompt, stage = request.prompt, stage_of(request)
        if stage == "chat":
            before = re.search(r"Current description: (.*)", prompt).group(1)
            message = re.search(r"New message: (.*)", prompt).group(1)
            return json.dumps({"description": message if before.startswith("(none") else f"{before}, {message}"})
        if stage == "reason":  # "with horses" has a plan; anything else is searched as said
            request = re.findall(r"Request: (.*)", prompt)[-1]  # the last: the prompt has examples before it
            if "slowly" in request:  # a plan that takes a while, as a small local model's does
                time.sleep(2.0)
            if "horses" in request:
                return json.dumps(MARKUP_PLAN if "markup" in request else PLAN)
            return json.dumps({"edits": [], "descriptions": [request], "questions": []})
        if stage == "verify":
            time.sleep(delay)
            return "Yes" if "horse" in re.search(r"The image: (.*)", prompt).group(1).lower() else "No"
        if stage == "judge":
            return "Yes" if "horse" in prompt.split("right:")[1].split("\n")[0].lower() else "No"
        if stage == "judge_list":
            shown = re.findall(r"Image (\d+)[^:]*: (.*)", prompt)
            return next((n for n, caption in shown if "horse" in caption.lower()), "1")
        return "A photo."

    return answer


def scripted_context(searcher, delay: float = 0.0, k: int = 8):
    """The searcher's graph context with the scripted model as LLM, verifier and judge (caption mode)."""

    from lensgraph.graphs.runner import caption_lookup
    from lensgraph.pipeline.models.backends import Models
    from lensgraph.pipeline.models.backends.caption_mode import CaptionVisionBackend
    from lensgraph.pipeline.models.calls import Model
    from lensgraph.pipeline.models.prompts import load_prompt_set

    prompts = load_prompt_set()
    llm = Model("scripted", ScriptedBackend(script(delay)))
    vision = Model("caption", CaptionVisionBackend(llm, caption_lookup(searcher), prompts["caption_vision"]))
    return context(searcher, Models(llm, None, vision, vision), prompts, k=k, tau=1.0, alpha=3, stages="judge",
                   max_concurrency=1, verifier="model", judge_mode="pairwise", rerank="fuse", verify_weight=8.0)


def make_tools(gallery: WebGallery, **config):
    from lensgraph.adapters.tools import ImageTools, ToolConfig

    tools = ImageTools(gallery.searcher.settings, ToolConfig(roots=(gallery.root,), **config))
    tools._searcher = gallery.searcher  # the gallery already open, encoders loaded
    return tools


class ServerThread:
    """`lensgraph serve`'s server (lensgraph.adapters.web.build_server: uvicorn) in a thread on a free port."""

    def __init__(self, tools, token: str | None = None):
        from lensgraph.adapters.web import build_server

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = build_server(tools, "127.0.0.1", self.port, token, warm_up=False)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def sse_events(lines) -> list[tuple[str, dict, float]]:
    """(event name, data, arrival time) of each Server-Sent Event in an iterable of text lines."""
    events, name, data = [], None, ""
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line.strip() and name:
            events.append((name, json.loads(data), time.monotonic()))
            name, data = None, ""
    return events
