"""Query texts' vectors are computed once per encoder and text (the last few hundred kept)."""

from __future__ import annotations

import numpy as np

from lensgraph.pipeline.gallery import TextVectorCache

VOCABULARY = {"a dog": [1, 0], "a cat": [0, 1], "beach": [1, 1], "x": [2, 2]}


def test_each_text_is_encoded_once_and_rows_keep_their_order():
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([VOCABULARY[t] for t in texts], dtype=np.float32)

    cache = TextVectorCache(size=3)
    first = cache.encode("clip", encode, ["a dog", "a cat", "a dog"])
    assert calls == [["a dog", "a cat"]] and first.tolist() == [[1, 0], [0, 1], [1, 0]]
    calls.clear()
    again = cache.encode("clip", encode, ["a cat", "beach"])
    assert calls == [["beach"]] and again.tolist() == [[0, 1], [1, 1]]
    cache.encode("st:minilm", encode, ["a cat"])  # another encoder: its own rows
    assert calls[-1] == ["a cat"]
    cache.encode("clip", encode, ["x"])  # over the size: the least recently used ("a dog") goes
    calls.clear()
    cache.encode("clip", encode, ["a dog"])
    assert calls == [["a dog"]]
