"""Bulk embedding of a large folder as a Ray Data job (`lensgraph index --ray`).

The driver (this process) lists the files, skips the unchanged ones and writes to the index; Ray
workers read, hash, decode and embed. A pool of actors each loads CLIP once (`ClipEmbedder`);
Ray Data streams blocks of paths through them, so memory stays bounded and a GPU per actor is used
where there is one. Results come back in batches, and each batch is written as it arrives, as in
the local path (pipeline/ingest/indexing.py: a killed job resumes, ids are content hashes).

The same code runs on one machine (a local Ray, started here when none is running) or on a
cluster (`--ray-address ray://HEAD:10001`, or `RAY_ADDRESS`): the workers then need the photos at
the same paths (a shared file system) and lensgraph installed; the index should be a Chroma
server (`--chroma-url`) that the driver reaches. Nothing here is a cluster of our own making.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensgraph.pipeline.errors import ImageLoadError, LensgraphError
from lensgraph.pipeline.ingest.prepare import PreparedFile, prepare_file


@dataclass(frozen=True)
class RayJob:
    clip: str
    """The index's CLIP spec: every actor loads it."""
    device: str = "cpu"
    runtime: str = "auto"
    address: str | None = None
    """A running Ray cluster (ray://HOST:10001 or "auto"); None starts a local Ray in this process."""
    actors: int | None = None
    """Embedding actors; None: one per GPU, or a single one sharing the CPU cores."""
    batch_size: int = 32


class ClipEmbedder:
    """A Ray Data actor: loads CLIP once, then turns blocks of file rows into embedded rows."""

    def __init__(self, spec: str, device: str, runtime: str, known: Collection[str], max_pixels: int):
        from lensgraph.pipeline.models.encoders import load_clip

        self.clip = load_clip(spec, device, runtime)
        self.known = known
        self.max_pixels = max_pixels

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = [
            prepare_file((Path(str(p)), _Stat(int(size), int(mtime))), self.known, self.clip.preprocess, self.max_pixels)
            for p, size, mtime in zip(rows["path"], rows["size"], rows["mtime_ns"])
        ]
        new = [p for p in prepared if isinstance(p, PreparedFile) and p.tensor is not None]
        vectors = np.zeros((len(prepared), self.clip.dim), dtype=np.float32)
        if new:
            import torch

            embedded = self.clip.encode_image_tensors(torch.stack([p.tensor for p in new]))
            slots = [i for i, p in enumerate(prepared) if isinstance(p, PreparedFile) and p.tensor is not None]
            vectors[slots] = np.asarray(embedded, dtype=np.float32)
        ok = [isinstance(p, PreparedFile) for p in prepared]
        return {
            "path": np.array([p.path for p in prepared], dtype=object),
            "id": np.array([p.id if good else "" for p, good in zip(prepared, ok)], dtype=object),
            "size": rows["size"], "mtime_ns": rows["mtime_ns"],
            "width": np.array([p.width if good else 0 for p, good in zip(prepared, ok)]),
            "height": np.array([p.height if good else 0 for p, good in zip(prepared, ok)]),
            "embedded": np.array([good and p.tensor is not None for p, good in zip(prepared, ok)]),
            "error": np.array(["" if good else p.reason for p, good in zip(prepared, ok)], dtype=object),
            "vector": vectors,
        }


@dataclass(frozen=True)
class _Stat:
    """The two fields of os.stat_result that `prepare_file` reads (a row carries them, not the stat)."""

    st_size: int
    st_mtime_ns: int


def embed_with_ray(todo: list[tuple[Path, os.stat_result]], known: Collection[str], job: RayJob, batch_size: int,
                   max_pixels: int) -> Iterator[PreparedFile | ImageLoadError]:
    """The files in `todo`, read and embedded by Ray workers: each a `PreparedFile` (with `vector` when
    its content was new) or the `ImageLoadError` that skipped it, streamed as batches finish."""
    if not todo:
        return
    ray = _start(job)
    import ray.data

    rows = [{"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns} for p, st in todo]
    cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    gpus = 1 if job.device.startswith("cuda") or (job.device == "auto" and cluster_gpus) else 0
    actors = job.actors or max(1, cluster_gpus if gpus else 1)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 200))).map_batches(
        ClipEmbedder, fn_constructor_kwargs={"spec": job.clip, "device": job.device, "runtime": job.runtime,
                                             "known": frozenset(known), "max_pixels": max_pixels},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus,
    )
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield from _results(batch)


def _results(batch: dict[str, np.ndarray]) -> Iterator[PreparedFile | ImageLoadError]:
    for j, path in enumerate(batch["path"]):
        if batch["error"][j]:
            yield ImageLoadError(str(path), str(batch["error"][j]))
            continue
        prepared = PreparedFile(str(path), str(batch["id"][j]), int(batch["size"][j]), int(batch["mtime_ns"][j]),
                             int(batch["width"][j]), int(batch["height"][j]))
        if batch["embedded"][j]:
            prepared.vector = np.asarray(batch["vector"][j], dtype=np.float32)
        yield prepared


def _start(job: RayJob) -> Any:
    try:
        import ray
    except ImportError:
        raise LensgraphError("--ray needs Ray Data: pip install 'lensgraph[ray]' (or 'ray[data]').") from None
    if not ray.is_initialized():
        address = job.address or os.environ.get("RAY_ADDRESS")
        # a local Ray sized to this machine unless an address names a cluster; quiet: lensgraph reports progress
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": os.cpu_count() or 1}))
    return ray
