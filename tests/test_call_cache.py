"""The call cache: what identifies a reply (the weights actually served, a composite's layout), the
numbered schema migrations, and the append-only call log."""

from __future__ import annotations

import sqlite3

import pytest
from PIL import Image

from fakes import ScriptedBackend
from lensgraph.pipeline.models.calls import CallCache, ImageInput, Model, ModelError
from lensgraph.pipeline.reasoning.replies import side_by_side


class ServingBackend(ScriptedBackend):
    """A server that ignores the requested model name (as llama.cpp does) and serves `weights`."""

    def __init__(self, weights: list[str], reply: str = "yes"):
        super().__init__(lambda r: reply, name="qwen")
        self.identity = "openai|http://127.0.0.1:8080/v1|qwen"
        self.weights = weights

    def served(self) -> list[str]:
        return self.weights


def test_other_weights_behind_the_same_url_and_name_never_get_old_replies(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    first = ServingBackend(["/models/qwen-0.5b.gguf"], "from the 0.5B")
    assert Model("openai:qwen", first, cache).complete("Q?").text == "from the 0.5B"
    swapped = ServingBackend(["/models/qwen-7b.gguf"], "from the 7B")  # same URL, same name, other weights
    reply = Model("openai:qwen", swapped, cache).complete("Q?")
    assert (reply.text, reply.cached) == ("from the 7B", False)
    again = Model("openai:qwen", ServingBackend(["/models/qwen-7b.gguf"], "x"), cache).complete("Q?")
    assert (again.text, again.cached) == ("from the 7B", True)
    # a server that honours the name (OpenAI, vLLM --served-model-name) is keyed by the name alone
    named = ServingBackend(["qwen", "other"])
    assert Model("openai:qwen", named, cache).identity == named.identity


def test_a_composite_is_keyed_by_what_the_model_sees():
    ref, cand = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (64, 48), "blue")
    small = ImageInput.from_pil(side_by_side(ref, cand, height=128), ("ref", "cand"))
    large = ImageInput.from_pil(side_by_side(ref, cand, height=384), ("ref", "cand"))
    assert small.id != large.id and small.sources == large.sources == ("ref", "cand")
    assert ImageInput.from_pil(side_by_side(ref, cand, height=128), ("ref", "cand")).id == small.id


def test_calls_are_logged_append_only(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    ok = Model("s", ScriptedBackend(lambda r: "yes"), cache, retries=0)
    ok.complete("Q?", stage="verify")
    ok.complete("Q?", stage="verify")  # from the cache, and logged as such
    bad = Model("s", ScriptedBackend(lambda r: ModelError("refused"), name="bad"), cache, retries=0)
    with pytest.raises(ModelError):
        bad.complete("Q?", stage="judge")
    counts = cache.call_counts()
    assert counts["verify"]["served"] == 1 and counts["verify"]["cached"] == 1
    assert counts["judge"] == {"served": 0, "cached": 0, "failed": 1, "seconds": 0.0}
    assert cache.count() == 1  # replies: one; calls: three rows
    assert sqlite3.connect(cache.path).execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 3


def test_an_old_cache_is_migrated_in_place(tmp_path):
    path = tmp_path / "calls.sqlite"
    db = sqlite3.connect(path)  # a cache as the first versions wrote it: no user_version, no logprobs
    db.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, backend TEXT, text TEXT, finish_reason TEXT, created REAL)")
    db.execute("INSERT INTO replies VALUES ('k', 'b', 'old reply', 'stop', 0)")
    db.commit()
    db.close()
    cache = CallCache(path)
    assert cache.get("k").text == "old reply"
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == len(CallCache.MIGRATIONS)
    cache.log("reason", "b", "k", "cached", 0.0)
    assert cache.call_counts()["reason"]["cached"] == 1
