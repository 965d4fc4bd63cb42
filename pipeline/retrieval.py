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

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from pipeline.index import GalleryIndex


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


def fuse(image_scores: np.ndarray | None, caption_scores: np.ndarray | None, tau: float) -> np.ndarray:
    """Combine per-image channel scores; NaN caption scores (no caption) fall back to the image score."""
    if caption_scores is None or tau == 0.0:
        return image_scores
    if image_scores is None or tau == 1.0:
        return caption_scores
    caption_scores = np.where(np.isnan(caption_scores), image_scores, caption_scores)
    return (1.0 - tau) * image_scores + tau * caption_scores


def top_k(scores: np.ndarray, k: int, exclude_rows: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the k best scores, best first; ties keep gallery order."""
    neg = np.negative(scores, dtype=np.float32)  # a copy, smallest first: NaN and excluded rows set to +inf
    nan = np.isnan(neg)
    masked = bool(nan.any()) or (exclude_rows is not None and len(exclude_rows) > 0)
    if masked:
        neg[nan] = np.inf
        if exclude_rows is not None:
            neg[exclude_rows] = np.inf
        k = min(k, int(np.count_nonzero(neg != np.inf)))
    k = min(k, len(neg))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(neg):
        part = np.argpartition(neg, k - 1)[:k]
        # argpartition may cut through a tie: then keep every row scoring at least the k-th best.
        kth = neg[part].max()
        if np.count_nonzero(neg <= kth) > k:
            part = np.flatnonzero(neg <= kth)
    else:
        part = np.arange(len(neg))
    return part[np.lexsort((part, neg[part]))][:k]


def channel_scores(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Mean cosine of each row of `matrix` to the query rows (all L2-normalised): the mean of the
    products is the product with the mean query, so one matrix-vector product whatever their number."""
    if not len(matrix):
        return np.zeros(0, dtype=np.float32)
    return matrix @ (queries[0] if len(queries) == 1 else queries.mean(axis=0, dtype=np.float32))


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
    q_img, q_cap = _as_rows(image_queries), _as_rows(caption_queries)
    if index.caption_count() == 0:
        q_cap = None
    if q_img is None and q_cap is None:
        return []
    if q_img is None:
        tau = 1.0
    elif q_cap is None:
        tau = 0.0
    use_img, use_cap = tau < 1.0, tau > 0.0

    snap = index.snapshot() if index.count() <= exact_limit else None  # ids, vectors, paths, captions of one version
    if snap is not None:
        ids, row_of = snap.ids, snap.row_of
        image_scores = channel_scores(snap.images, q_img) if use_img else None
        caption_scores = None
        if use_cap:
            caption_scores = np.where(snap.has_caption, channel_scores(snap.captions, q_cap), np.nan).astype(np.float32)
    else:
        candidates = set(include) | _nearest(index, q_img if use_img else None, q_cap if use_cap else None,
                                             overfetch * k + len(exclude))
        ids, image_scores, caption_scores = _rescore(index, sorted(candidates), q_img if use_img else None,
                                                     q_cap if use_cap else None)
        row_of = {}
    scores = fuse(image_scores, caption_scores, tau)
    row_of = row_of or {i: r for r, i in enumerate(ids)}
    exclude_rows = np.array(sorted({row_of[i] for i in exclude if i in row_of}), dtype=np.int64)
    best = top_k(scores, k, exclude_rows)
    if include:
        best = _with_included(best, scores, {row_of[i] for i in include if i in row_of} - set(exclude_rows.tolist()))
    if snap is not None:  # paths and captions of the same version as the vectors: no read from Chroma
        return [_hit(ids[r], scores, image_scores, caption_scores, r, snap.paths[r], snap.caption_texts[r]) for r in best]
    meta = index.metadata([ids[r] for r in best])
    # an image deleted since its candidates were fetched is not returned: no hit without its record
    return [_hit(ids[r], scores, image_scores, caption_scores, r, (meta[ids[r]] or {}).get("path"),
                 (meta[ids[r]] or {}).get("caption")) for r in best if ids[r] in meta]


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
        image_scores = channel_scores(np.stack([vecs[i] for i in ids]), q_img) if ids else np.zeros(0)
    if q_cap is not None:
        caps = index.vectors(ids, "captions")
        if q_img is None:
            ids = [i for i in ids if i in caps]
        caption_scores = np.array(
            [channel_scores(caps[i][None, :], q_cap)[0] if i in caps else np.nan for i in ids], dtype=np.float32
        )
    return ids, image_scores, caption_scores


def _hit(image_id: str, scores: np.ndarray, image_scores: np.ndarray | None, caption_scores: np.ndarray | None,
         r: int, path: str | None, caption: str | None) -> Hit:
    caption_score = None if caption_scores is None or np.isnan(caption_scores[r]) else float(caption_scores[r])
    image_score = None if image_scores is None else float(image_scores[r])
    return Hit(image_id, float(scores[r]), image_score, caption_score, path, caption)
