"""Graph nodes. Each reads the state and runtime context, calls pipeline/ functions, and returns a
partial state with one trace entry. A node whose model fails or answers garbage leaves the
previous ranking in place and records why in the trace."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.state import Candidate, SearchState
from pipeline.errors import LensgraphError
from pipeline.models import ImageInput, Reply
from pipeline.reasoning import (
    BLANK_CAPTION,
    baseline_query,
    blank_image,
    judge_order,
    parse_numbered_yes_no,
    parse_questions,
    parse_reasoning,
    parse_verdict,
    parse_yes_no,
    side_by_side,
    verification_order,
)

BLANK_ID = "blank"  # the stand-in reference of text-to-image queries
T = TypeVar("T")


class StageTimer:
    """Collects one stage's seconds, model calls, cache hits and warnings for the trace."""

    def __init__(self, stage: str):
        self.stage = stage
        self.started = time.perf_counter()
        self.calls = 0
        self.cache_hits = 0
        self.warnings: list[str] = []

    def count(self, reply: Reply) -> Reply:
        if reply.cached:
            self.cache_hits += 1
        else:
            self.calls += 1
        return reply

    def entry(self, **extra: Any) -> list[dict[str, Any]]:
        return [{
            "stage": self.stage,
            "seconds": round(time.perf_counter() - self.started, 3),
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "warnings": self.warnings,
            **extra,
        }]


def run_concurrently(fn: Callable[[T], Any], items: Iterable[T], workers: int) -> list[Any]:
    """fn over items in parallel threads, results in order; an exception is returned, not raised."""

    def safe(item: T) -> Any:
        try:
            return fn(item)
        except LensgraphError as e:
            return e

    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [safe(i) for i in items]
    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="lensgraph-call") as pool:
        return list(pool.map(safe, items))


def _ranking(candidates: list[Candidate], state: SearchState | None = None) -> list[str]:
    """Ids of the (re-ranked) top-k, followed by the rest of the retrieval ranking when given."""
    ids = [c["id"] for c in candidates]
    tail = (state or {}).get("rankings", {}).get("retrieve", [])[len(ids):]
    return ids + tail


def caption(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Caption the reference: the index's stored caption if it has one, else the captioner."""
    ctx, timer = runtime.context, StageTimer("caption")
    reference = state.get("reference")
    if not reference:
        return {"reference_id": None, "caption": BLANK_CAPTION, "trace": timer.entry(source="blank reference")}
    image = ImageInput.from_path(reference)
    stored = ctx.searcher.index.metadata([image.id]).get(image.id, {}).get("caption")
    if stored:
        return {"reference_id": image.id, "caption": stored, "trace": timer.entry(source="index")}
    if ctx.models.captioner is None:
        timer.warnings.append("caption: no captioner (--vlm) and no stored caption; using the instruction alone")
        return {"reference_id": image.id, "caption": "", "trace": timer.entry(source="none")}
    try:
        reply = timer.count(ctx.models.captioner.complete(ctx.prompts["caption"].render(), [image], max_tokens=120))
        text = reply.text.strip()
    except LensgraphError as e:
        timer.warnings.append(f"caption: {e}; using the instruction alone")
        text = ""
    return {"reference_id": image.id, "caption": text, "trace": timer.entry(source=ctx.models.captioner.spec)}


def reason(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Atomic edits and target descriptions from the LLM; the caption + instruction if it fails."""
    ctx, timer = runtime.context, StageTimer("reason")
    template = ctx.prompts["reason"]
    prompt = template.render(caption=state.get("caption") or BLANK_CAPTION, instruction=state["instruction"])
    try:
        reply = timer.count(ctx.models.llm.complete(prompt, max_tokens=400, json=template.wants_json))
        text = reply.text
        if reply.finish_reason == "length":
            timer.warnings.append("reason: reply cut by max_tokens; parsed what was there")
    except LensgraphError as e:
        text = ""
        timer.warnings.append(f"reason: {e}")
    parsed = parse_reasoning(text, state.get("caption", ""), state["instruction"])
    if parsed.warning:
        timer.warnings.append(parsed.warning)
    return {**parsed.value, "trace": timer.entry()}


def retrieve(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """CLIP (and caption-channel) retrieval of the top-k for the descriptions; reference excluded."""
    ctx, timer = runtime.context, StageTimer("retrieve")
    query = baseline_query(state.get("caption", ""), state["instruction"])
    descriptions = state.get("descriptions") or [query]
    texts = descriptions + [query] if ctx.query_text and query not in descriptions else descriptions
    exclude = {state["reference_id"]} if state.get("reference_id") else set()
    hits = ctx.searcher.search_texts(texts, k=max(ctx.k, ctx.depth), tau=ctx.tau, exclude=exclude)
    candidates: list[Candidate] = [{"id": h.id, "path": h.path, "score": round(h.score, 6)} for h in hits[: ctx.k]]
    update: dict[str, Any] = {"candidates": candidates, "rankings": {"retrieve": [h.id for h in hits]}}
    if not state.get("descriptions"):
        update["descriptions"] = descriptions
    return {**update, "trace": timer.entry()}


def propose(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Yes/no questions with expected answers, one per edit (removals expect no)."""
    ctx, timer = runtime.context, StageTimer("propose")
    edits = state.get("edits") or []
    template = ctx.prompts["propose"]
    prompt = template.render(
        caption=state.get("caption") or BLANK_CAPTION,
        instruction=state["instruction"],
        edits=json.dumps(edits, ensure_ascii=False) if edits else "(none listed)",
    )
    try:
        text = timer.count(ctx.models.llm.complete(prompt, max_tokens=300, json=template.wants_json)).text
    except LensgraphError as e:
        text = ""
        timer.warnings.append(f"propose: {e}")
    parsed = parse_questions(text, edits)
    if parsed.warning:
        timer.warnings.append(parsed.warning)
    return {"questions": parsed.value, "trace": timer.entry()}


def verify(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask every question about every candidate (concurrently); re-sort by matching answers."""
    ctx, timer = runtime.context, StageTimer("verify")
    candidates, questions = state.get("candidates") or [], state.get("questions") or []
    if not questions or not candidates:
        timer.warnings.append("verify: no questions; ranking unchanged")
        return {"rankings": {"verify": _ranking(candidates, state)}, "trace": timer.entry()}
    images = {c["id"]: ImageInput.from_path(c["path"]) for c in candidates}
    if ctx.verify_batch:  # one call per candidate with every question
        jobs = [(c["id"], questions) for c in candidates]
    else:  # one call per (candidate, question)
        jobs = [(c["id"], [q]) for c in candidates for q in questions]

    def ask(job: tuple[str, list[dict[str, str]]]) -> Reply:
        cid, asked = job
        if not ctx.verify_batch:
            return ctx.models.verifier.complete(
                ctx.prompts["verify"].render(question=asked[0]["question"]), [images[cid]], max_tokens=8
            )
        listed = "\n".join(f"{n}. {q['question']}" for n, q in enumerate(asked, 1))
        return ctx.models.verifier.complete(
            ctx.prompts["verify_all"].render(questions=listed), [images[cid]], max_tokens=8 * len(asked) + 8
        )

    replies = run_concurrently(ask, jobs, ctx.workers)
    answers: dict[str, list[str | None]] = {c["id"]: [] for c in candidates}
    matches = {c["id"]: 0 for c in candidates}
    failures = unparsed = 0
    for (cid, asked), reply in zip(jobs, replies):
        if isinstance(reply, Exception):
            failures += 1
            answers[cid].extend([None] * len(asked))
            continue
        timer.count(reply)
        if ctx.verify_batch:
            parsed = parse_numbered_yes_no(reply.text, len(asked))
            texts = [{True: "Yes", False: "No", None: "?"}[a] for a in parsed]
        else:
            parsed, texts = [parse_yes_no(reply.text)], [reply.text.strip()[:40]]
        for q, answer, text in zip(asked, parsed, texts):
            answers[cid].append(text)
            if answer is None:
                unparsed += 1
            elif answer == (q["expected"] == "yes"):
                matches[cid] += 1
    if failures:
        first = next(r for r in replies if isinstance(r, Exception))
        timer.warnings.append(f"verify: {failures}/{len(jobs)} calls failed ({first})")
    if unparsed:
        timer.warnings.append(
            f"verify: {unparsed}/{len(candidates) * len(questions)} answers had no yes/no (counted as not matching)"
        )
    if failures == len(jobs):
        timer.warnings.append("verify: every call failed; ranking unchanged")
        return {"answers": answers, "rankings": {"verify": _ranking(candidates, state)}, "trace": timer.entry()}
    by_id = {c["id"]: c for c in candidates}
    reranked = [by_id[i] for i in verification_order(_ranking(candidates), matches)]
    return {
        "answers": answers,
        "matches": matches,
        "candidates": reranked,
        "rankings": {"verify": _ranking(reranked, state)},
        "trace": timer.entry(),
    }


def judge(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Show reference | candidate for the top alpha; the first judged Yes moves to rank 1."""
    ctx, timer = runtime.context, StageTimer("judge")
    candidates = state.get("candidates") or []
    top = candidates[: ctx.alpha]
    reference = state.get("reference")
    ref_image = ImageInput.from_path(reference).pil() if reference else blank_image()
    ref_id = state.get("reference_id") or BLANK_ID
    prompt = ctx.prompts["judge"].render(caption=state.get("caption") or BLANK_CAPTION, instruction=state["instruction"])

    def ask(candidate: Candidate) -> Reply:
        composite = side_by_side(ref_image, ImageInput.from_path(candidate["path"]).pil())
        return ctx.models.judge.complete(prompt, [ImageInput.from_pil(composite, (ref_id, candidate["id"]))], max_tokens=200)

    verdicts: dict[str, dict[str, Any]] = {}
    for candidate, reply in zip(top, run_concurrently(ask, top, ctx.workers)):
        if isinstance(reply, Exception):
            timer.warnings.append(f"judge: {candidate['id'][:12]}: {reply}")
            verdicts[candidate["id"]] = {"verdict": None, "reply": ""}
            continue
        timer.count(reply)
        verdict = parse_verdict(reply.text)
        if verdict is None:
            timer.warnings.append(f"judge: no 'ANSWER: Yes/No' in the reply for {candidate['id'][:12]}")
        verdicts[candidate["id"]] = {"verdict": verdict, "reply": reply.text.strip()}
    by_id = {c["id"]: c for c in candidates}
    reranked = [by_id[i] for i in judge_order(_ranking(candidates), {k: v["verdict"] for k, v in verdicts.items()}, ctx.alpha)]
    return {"verdicts": verdicts, "candidates": reranked, "rankings": {"judge": _ranking(reranked, state)}, "trace": timer.entry()}
