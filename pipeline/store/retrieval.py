"""Scoring the gallery against query vectors.

The fused score of ImageScope, averaged over the query's descriptions j:
    score(i) = mean_j [ (1 - tau) * cos(text_j, image_i) + tau * cos(text'_j, caption_i) ]
where text_j is embedded by CLIP and text'_j by the caption channel's encoder. An image with no
caption takes its image score in place of the missing caption score (no evidence either way).

Galleries up to `exact_limit` images are scored exactly with one matrix product per channel.
Larger ones take candidates from Chroma's HNSW (an over-fetch of both channels) and re-score
those exactly, so the order among candidates is exact; only recall depends on HNSW.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lensgraph.pipeline.store.index import GalleryIndex


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x, paid per hit per search
class Hit:
    id: str
    score: float
    image_score: float | None
    caption_score: float | None
    path: str | None = None
    caption: str | None = None


def _as_rows(queries: np.ndarray | None) -> np.ndarray | None:
    if queries is None:
        return None
    q = np.asarray(queries, dtype=np.float32)
    return q[None, :] if q.ndim == 1 else q


def query_vector(queries: np.ndarray | None) -> np.ndarray | None:
    """One vector for one or more L2-normalised query rows: the mean cosine of a gallery vector to
    the rows is its product with their mean, so one matrix-vector product whatever their number."""
    if queries is None:
        return None
    q = np.asarray(queries, dtype=np.float32)
    return q if q.ndim == 1 else q[0] if len(q) == 1 else q.mean(axis=0, dtype=np.float32)


def fuse(image_scores: np.ndarray | None, caption_scores: np.ndarray | None, tau: float) -> np.ndarray:
    """Combine per-image channel scores; NaN caption scores (no caption) fall back to the image score."""
    if caption_scores is None or tau == 0.0:
        return image_scores
    if image_scores is None or tau == 1.0:
        return caption_scores
    caption_scores = np.where(np.isnan(caption_scores), image_scores, caption_scores)
    return (1.0 - tau) * image_scores + tau * caption_scores


def top_k(scores: np.ndarray, k: int, exclude_rows: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the k best scores, best first; ties keep gallery order; NaN scores never."""
    if exclude_rows is not None and len(exclude_rows):
        scores = scores.copy()
        scores[exclude_rows] = np.nan
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k == len(scores):
        rows = np.flatnonzero(~np.isnan(scores))
        return rows[np.lexsort((rows, -scores[rows]))]
    # The k best end up last, with no negated copy of the scores; partitioned at the (k+1)-th best
    # too, the two around the cut show whether a tie crosses it without another pass over the scores.
    cut = len(scores) - k
    order = np.argpartition(scores, (cut - 1, cut))
    edge = scores[order[cut - 1 :]]  # the (k+1)-th best, then the k best
    if np.isnan(edge).any():  # NaN sorts above every number: rows without a score, excluded rows
        numbers = np.flatnonzero(~np.isnan(scores))
        return numbers[top_k(scores[numbers], k)]
    if edge[0] == edge[1]:  # the cut went through a tie: every row tied with the k-th best competes
        rows = np.flatnonzero(scores >= edge[1])
        return rows[np.lexsort((rows, -scores[rows]))][:k]
    rows = order[cut:]
    return rows[np.lexsort((rows, -edge[1:]))]


def search(
    index: GalleryIndex,
    *,
    image_queries: np.ndarray | None = None,
    caption_queries: np.ndarray | None = None,
    k: int = 10,
    tau: float = 0.15,
    exclude: Collection[str] = (),
    include: Collection[str] = (),
    exact_limit: int = 200_000,
    overfetch: int = 4,
) -> list[Hit]:
    """Top-k gallery images for query vectors in the image channel (CLIP text or image
    embeddings) and/or the caption channel (the caption encoder's text embeddings).

    `include`: ids scored whatever their rank (CIRR's img_set members, whose order over the whole
    gallery Recall_subset needs); those outside the top-k follow it, best first, so the list stays
    in score order."""
    snap = index.snapshots.current() if index.count() <= exact_limit else None  # ids, vectors, paths, captions of one version
    if not (snap.captioned if snap is not None else index.caption_count()):
        caption_queries = None
    if image_queries is None and caption_queries is None:
        return []
    if image_queries is None:
        tau = 1.0
    elif caption_queries is None:
        tau = 0.0
    use_img, use_cap = tau < 1.0, tau > 0.0
    if snap is not None:
        ids, row_of = snap.ids, snap.row_of
        if not ids:
            return []
        image_scores = snap.images @ query_vector(image_queries) if use_img else None
        caption_scores = None
        if use_cap:
            caption_scores = np.where(snap.has_caption, snap.captions @ query_vector(caption_queries), np.float32(np.nan))
    else:
        q_img = _as_rows(image_queries) if use_img else None
        q_cap = _as_rows(caption_queries) if use_cap else None
        candidates = set(include) | _nearest(index, q_img, q_cap, overfetch * k + len(exclude))
        ids, image_scores, caption_scores = _rescore(index, sorted(candidates), q_img, q_cap)
        row_of = {i: r for r, i in enumerate(ids)}
    scores = fuse(image_scores, caption_scores, tau)
    exclude_rows = np.array(sorted({row_of[i] for i in exclude if i in row_of}), dtype=np.int64) if exclude else None
    best = top_k(scores, k, exclude_rows)
    if include:
        excluded = set() if exclude_rows is None else set(exclude_rows.tolist())
        best = _with_included(best, scores, {row_of[i] for i in include if i in row_of} - excluded)
    if snap is not None:  # paths and captions of the same version as the vectors: no read from Chroma
        return _hits(ids, best, scores, image_scores, caption_scores, snap.paths, snap.caption_texts)
    meta = index.metadata([ids[r] for r in best.tolist()])
    # an image deleted since its candidates were fetched is not returned: no hit without its record
    best = np.array([r for r in best.tolist() if ids[r] in meta], dtype=np.int64)
    records = {r: meta[ids[r]] or {} for r in best.tolist()}
    return _hits(ids, best, scores, image_scores, caption_scores,
                 {r: m.get("path") for r, m in records.items()}, {r: m.get("caption") for r, m in records.items()})


def _with_included(best: np.ndarray, scores: np.ndarray, rows: set[int]) -> np.ndarray:
    """The top-k rows followed by the included rows outside them, best first."""
    extra = np.array(sorted(rows - set(best.tolist())), dtype=np.int64)
    if not len(extra):
        return best
    extra_scores = np.where(np.isnan(scores[extra]), -np.inf, scores[extra])
    return np.concatenate([best, extra[np.lexsort((extra, -extra_scores))]])


def _nearest(index: GalleryIndex, q_img: np.ndarray | None, q_cap: np.ndarray | None, n: int) -> set[str]:
    """Candidates from Chroma's HNSW in each channel in use (only picks them: they are re-scored exactly)."""
    found: set[str] = set()
    if q_img is not None:
        found |= index.nearest(q_img, n, "images")
    if q_cap is not None:
        found |= index.nearest(q_cap, n, "captions")
    return found


def _rescore(index: GalleryIndex, ids: list[str], q_img: np.ndarray | None,
             q_cap: np.ndarray | None) -> tuple[list[str], np.ndarray | None, np.ndarray | None]:
    """Exact channel scores of the candidates (those without a vector in a needed channel dropped)."""
    image_scores = caption_scores = None
    if q_img is not None:
        vecs = index.vectors(ids, "images")
        ids = [i for i in ids if i in vecs]
        image_scores = np.stack([vecs[i] for i in ids]) @ query_vector(q_img) if ids else np.zeros(0, dtype=np.float32)
    if q_cap is not None:
        caps = index.vectors(ids, "captions")
        if q_img is None:
            ids = [i for i in ids if i in caps]
        q = query_vector(q_cap)
        caption_scores = np.array([caps[i] @ q if i in caps else np.nan for i in ids], dtype=np.float32)
    return ids, image_scores, caption_scores


def _hits(ids: list[str], rows: np.ndarray, scores: np.ndarray, image_scores: np.ndarray | None,
          caption_scores: np.ndarray | None, paths: Sequence[str | None] | Mapping[int, str | None],
          captions: Sequence[str | None] | Mapping[int, str | None]) -> list[Hit]:
    """Hits for the given rows (`paths` and `captions` indexed by row). This runs per search on caches
    the matrix product has just flushed, where each distinct Python step costs microseconds: scores
    become floats an array at a time, and one comprehension builds the hits."""
    best = scores[rows].tolist()
    nones = [None] * len(best)
    image = best if image_scores is scores else nones if image_scores is None else image_scores[rows].tolist()
    caption = nones if caption_scores is None else [None if c != c else c for c in caption_scores[rows].tolist()]  # NaN: none
    return [Hit(ids[r], s, i, c, paths[r], captions[r]) for r, s, i, c in zip(rows.tolist(), best, image, caption)]
