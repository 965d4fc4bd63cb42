"""Graph nodes. Each reads the state and runtime context, calls pipeline/ functions, and returns a
partial state with one trace entry. A node whose model fails or answers garbage leaves the
previous ranking in place and records why in the trace."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from langgraph.runtime import Runtime

from lensgraph.graphs.context import Context
from lensgraph.graphs.state import Candidate, SearchState

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.images import check_unchanged
from lensgraph.pipeline.reasoning.evidence import (
    CaptionMatcher,
    answer_probability,
    choice_probabilities,
    first_yes_order,
    fuse,
    parse_choice,
    question_trust,
    tally_verification,
)
from lensgraph.pipeline.models.calls import ImageInput, Reply, caption_image
from lensgraph.pipeline.reasoning.objects import question_object, request_language
from lensgraph.pipeline.reasoning.planning import Plan, check_plan, parse_plan, request_words
from lensgraph.pipeline.reasoning.replies import (
    BLANK_CAPTION,
    baseline_query,
    blank_image,
    parse_numbered_yes_no,
    parse_questions,
    parse_verdict,
    parse_yes_no,
    side_by_side,
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
        self.failures = 0
        self.warnings: list[str] = []
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}

    def fail(self, warning: str, failures: int = 1) -> None:
        """A model call (or `failures` of them) failed for good: the stage degrades, and says so."""
        self.failures += failures
        self.warnings.append(warning)

    def count(self, reply: Reply) -> Reply:
        if reply.cached:
            self.cache_hits += 1
        else:
            self.calls += 1
        if reply.usage is not None:  # served calls only: a cached reply cost no tokens
            self.tokens["prompt_tokens"] += reply.usage.prompt
            self.tokens["completion_tokens"] += reply.usage.completion
            self.tokens["cached_tokens"] += reply.usage.cached or 0
        return reply

    def entry(self, **extra: Any) -> list[dict[str, Any]]:
        return [{
            "stage": self.stage,
            "seconds": round(time.perf_counter() - self.started, 3),
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "failures": self.failures,
            # a stage's calls run concurrently: one sequential round trip, whether served or cached
            "rounds": 1 if self.calls + self.cache_hits else 0,
            **self.tokens,
            "warnings": self.warnings,
            **extra,
        }]


def run_concurrently(fn: Callable[[T], Any], items: Iterable[T], workers: int) -> list[Any]:
    """fn over items in parallel threads, results in order; an exception is returned, not raised."""

    def safe(item: T) -> Any:
        try:
            return fn(item)
        except Exception as e:  # any job's failure (a model error, a moved or undecodable file) is that job's
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


def candidate_image(candidate: Candidate) -> ImageInput:
    """A candidate's image as indexed: a file moved, deleted or changed since is an error for that
    candidate (a model must not judge other pixels than the ones retrieved)."""
    if not candidate.get("path"):
        raise LensgraphError(f"image {candidate['id'][:12]} has no file path in the index")
    image = ImageInput.from_path(candidate["path"])
    check_unchanged(candidate["id"], image.id, candidate["path"])
    return image


def caption(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Caption the reference: the index's stored caption if it has one, else the captioner."""
    ctx, timer = runtime.context, StageTimer("caption")
    reference = state.get("reference")
    if not reference:
        return {"reference_id": None, "caption": BLANK_CAPTION, "trace": timer.entry(source="blank reference")}
    try:
        image = ImageInput.from_path(reference)
    except (OSError, LensgraphError) as e:  # moved or unreadable since the query was made: not the query's end
        timer.fail(f"caption: cannot read the reference image ({e}); searching by the instruction alone")
        return {"reference": None, "reference_id": None, "caption": "", "trace": timer.entry(source="unreadable reference")}
    stored = (ctx.gallery.index.metadata([image.id]).get(image.id) or {}).get("caption")
    if stored:
        return {"reference_id": image.id, "caption": stored, "trace": timer.entry(source="index")}
    if ctx.models.captioner is None:
        timer.warnings.append("caption: no captioner (--vlm) and no stored caption; using the instruction alone")
        return {"reference_id": image.id, "caption": "", "trace": timer.entry(source="none")}
    try:
        text = timer.count(caption_image(ctx.models.captioner, ctx.prompts["caption"].render(), image)).text
    except Exception as e:  # a model or image fault costs the caption, never the query
        timer.fail(f"caption: {e}; using the instruction alone")
        text = ""
    return {"reference_id": image.id, "caption": text, "trace": timer.entry(source=ctx.models.captioner.spec)}


def request_text(state: SearchState) -> str:
    """The request as the stages read it: in English (its translation, when it was written in another language)."""
    return state.get("translation") or state["instruction"]


def translate(ctx: Context, instruction: str, timer: StageTimer) -> str | None:
    """The request in English, when it is written in another language (one short LLM call); None for an
    English request or when the call fails (the checks that read English words then stand aside)."""
    language = request_language(instruction)
    if language is None:
        return None
    try:
        reply = timer.count(ctx.models.llm.complete(ctx.prompts["translate"].render(instruction=instruction),
                                                    max_tokens=60, stage="translate"))
    except Exception as e:  # any backend fault costs the translation, never the plan
        timer.fail(f"translate: {e}; planning from the request as written ({language})")
        return None
    english = reply.text.strip().removeprefix("English:").removeprefix("Request:").strip().strip('"').splitlines()
    if not english or request_language(english[0]) is not None:
        timer.warnings.append(f"translate: no English in the reply; planning from the request as written ({language})")
        return None
    return english[0]


def reason(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The plan: edits, target descriptions and, with the default prompt set, the verification
    questions, in one LLM call (after a translation into English when the request is in another
    language); checked for contradictions. The caption + instruction if it fails."""
    ctx, timer = runtime.context, StageTimer("reason")
    template = ctx.prompts["reason"]
    caption = state.get("caption") or BLANK_CAPTION
    translation = translate(ctx, state["instruction"], timer)
    state = {**state, "translation": translation} if translation else state
    prompt = template.render(caption=caption, instruction=request_text(state))
    try:
        reply = timer.count(ctx.models.llm.complete(prompt, max_tokens=400, json=template.wants_json, schema=template.schema, stage="reason"))
        text = reply.text
        if reply.finish_reason == "length":
            timer.warnings.append("reason: reply cut by max_tokens; parsed what was there")
    except Exception as e:  # any backend fault (not only ours) costs the plan, never the query
        text = ""
        timer.fail(f"reason: {e}")
    plan = parse_plan(text, state.get("caption", ""), request_text(state))
    if plan.questions or ctx.plan_checks:
        plan = check_plan(plan, caption, request_text(state), ctx.mentions, ctx.plan_checks, ctx.lexicon)
    timer.warnings.extend(plan.warnings)
    update = {**plan.as_state(), "trace": timer.entry(fixes=plan.fixes)}
    return {**update, "translation": translation} if translation else update


def retrieve(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """CLIP (and caption-channel) retrieval of the top-k for the descriptions; reference excluded
    unless the context keeps it."""
    ctx, timer = runtime.context, StageTimer("retrieve")
    query = baseline_query(state.get("caption", ""), request_text(state))
    descriptions = state.get("descriptions") or [query]
    texts = descriptions + [query] if ctx.settings.query_text and query not in descriptions else descriptions
    weights = [1.0] * len(descriptions) + [ctx.settings.query_weight] * (len(texts) - len(descriptions))
    exclude = {state["reference_id"]} if state.get("reference_id") and not ctx.keep_reference else set()
    depth = max(ctx.settings.k, ctx.depth)
    subset = state.get("subset") or []
    hits = ctx.gallery.search_texts(texts, k=depth, tau=ctx.settings.tau, exclude=exclude, weights=weights, include=subset)
    candidates: list[Candidate] = [
        {"id": h.id, "path": h.path, "score": round(h.score, 6), "retrieval": round(h.score, 6)} for h in hits[: ctx.settings.k]
    ]
    update: dict[str, Any] = {"candidates": candidates, "rankings": {"retrieve": [h.id for h in hits[:depth]]}}
    if subset:
        members = set(subset)
        update["subset_order"] = [h.id for h in hits if h.id in members]
    if not state.get("descriptions"):
        update["descriptions"] = descriptions
    return {**update, "trace": timer.entry()}


def propose(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Yes/no questions with expected answers, one per edit (removals expect no): the two-call path,
    for prompt sets whose reason stage does not plan the questions itself."""
    ctx, timer = runtime.context, StageTimer("propose")
    edits = state.get("edits") or []
    template = ctx.prompts["propose"]
    prompt = template.render(
        caption=state.get("caption") or BLANK_CAPTION,
        instruction=request_text(state),
        edits=json.dumps(edits, ensure_ascii=False) if edits else "(none listed)",
    )
    try:
        text = timer.count(ctx.models.llm.complete(prompt, max_tokens=300, json=template.wants_json, schema=template.schema, stage="propose")).text
    except Exception as e:  # any backend fault costs the questions, never the query
        text = ""
        timer.fail(f"propose: {e}")
    parsed = parse_questions(text, edits)
    if parsed.warning:
        timer.warnings.append(parsed.warning)
    plan = Plan(edits, parsed.value, state.get("descriptions") or [])
    question_checks = [c for c in ctx.plan_checks if c.startswith("questions_")]
    if question_checks:
        plan = check_plan(plan, state.get("caption") or BLANK_CAPTION, request_text(state), ctx.mentions, question_checks, ctx.lexicon)
    return {"questions": plan.questions, "trace": timer.entry(fixes=plan.fixes)}


def _ask_model(ctx: Context, candidates: list[Candidate], questions: list[dict[str, str]], timer: StageTimer,
               ) -> tuple[dict[str, list[str | None]], dict[str, list[float | None]]] | None:
    """The verifier model's answers and P(yes) per (candidate, question); None when every call failed."""
    jobs = [(c, questions) for c in candidates] if ctx.settings.verify_batch else [(c, [q]) for c in candidates for q in questions]
    # One read and decode per candidate, whatever the number of questions; a lock per candidate, so the
    # reads of different candidates still run side by side.
    images: dict[str, ImageInput] = {}
    locks = {c["id"]: threading.Lock() for c in candidates}

    def image_of(candidate: Candidate) -> ImageInput:
        with locks[candidate["id"]]:
            if candidate["id"] not in images:
                images[candidate["id"]] = candidate_image(candidate)  # a failure is not kept: each job reports it
            return images[candidate["id"]]

    def ask(job: tuple[Candidate, list[dict[str, str]]]) -> Reply:
        candidate, asked = job
        image = image_of(candidate)  # per job: a missing or changed file costs that job only
        if not ctx.settings.verify_batch:
            prompt = ctx.prompts["verify"].render(question=asked[0]["question"])
            return ctx.models.verifier.complete(prompt, [image], max_tokens=4, logprobs=True, stage="verify")
        listed = "\n".join(f"{n}. {q['question']}" for n, q in enumerate(asked, 1))
        return ctx.models.verifier.complete(ctx.prompts["verify_all"].render(questions=listed), [image],
                                            max_tokens=8 * len(asked) + 8, stage="verify")

    replies = run_concurrently(ask, jobs, ctx.workers)
    answers: dict[str, list[str | None]] = {c["id"]: [] for c in candidates}
    p_yes: dict[str, list[float | None]] = {c["id"]: [] for c in candidates}
    failures = [r for r in replies if isinstance(r, Exception)]
    unparsed = 0
    for (candidate, asked), reply in zip(jobs, replies):
        cid = candidate["id"]
        if isinstance(reply, Exception):
            answers[cid].extend([None] * len(asked))
            p_yes[cid].extend([None] * len(asked))
            continue
        timer.count(reply)
        if ctx.settings.verify_batch:
            words = parse_numbered_yes_no(reply.text, len(asked))
            answers[cid].extend({True: "Yes", False: "No", None: "?"}[w] for w in words)
            p_yes[cid].extend(None if w is None else float(w) for w in words)
        else:
            answers[cid].append(reply.text.strip()[:40])
            p_yes[cid].append(answer_probability(reply, parse_yes_no(reply.text)))
        unparsed += sum(1 for p in p_yes[cid][-len(asked):] if p is None)
    if failures:
        timer.fail(f"verify: {len(failures)}/{len(jobs)} calls failed ({failures[0]})", len(failures))
    if unparsed:
        timer.warnings.append(f"verify: {unparsed}/{len(candidates) * len(questions)} answers had no yes/no (no evidence)")
    if len(failures) == len(jobs):
        timer.warnings.append("verify: every call failed; ranking unchanged")
        return None
    return answers, p_yes


def _match_captions(ctx: Context, candidates: list[Candidate], questions: list[dict[str, str]], timer: StageTimer,
                    ) -> tuple[dict[str, list[str | None]], dict[str, list[float | None]]] | None:
    """P(yes) per (candidate, question) from the candidates' stored captions: no model call."""
    captions = {i: m.get("caption") or "" for i, m in ctx.gallery.index.metadata([c["id"] for c in candidates]).items()}
    missing = [c["id"] for c in candidates if not captions.get(c["id"])]
    if len(missing) == len(candidates):
        timer.warnings.append("verify: no candidate has a stored caption (--verifier captions needs them); ranking unchanged")
        return None
    if missing:
        timer.warnings.append(f"verify: {len(missing)} candidate(s) have no stored caption (no evidence for them)")
    matcher = ctx.matcher or CaptionMatcher()
    answers: dict[str, list[str | None]] = {}
    p_yes: dict[str, list[float | None]] = {}
    for c in candidates:
        caption = captions.get(c["id"])
        probs = [matcher.probability(question_object(q["question"]), caption) if caption else None for q in questions]
        p_yes[c["id"]] = probs
        answers[c["id"]] = [None if p is None else ("Yes" if p >= 0.5 else "No") for p in probs]
    return answers, p_yes


def skipped_entries(ctx: Context) -> list[dict[str, Any]]:
    """Trace entries for the stages after this one that are left out by default, saying why."""
    return [entry for stage, why in ctx.skipped.items() for entry in StageTimer(stage).entry(skipped=why)]


def verify(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer every question about every candidate; re-rank by the evidence (pipeline/reasoning/evidence.py)."""
    update = _verify(state, runtime.context)
    return {**update, "trace": update["trace"] + skipped_entries(runtime.context)}


def _verify(state: SearchState, ctx: Context) -> dict[str, Any]:
    timer = StageTimer("verify")
    candidates, questions = state.get("candidates") or [], state.get("questions") or []
    if not questions or not candidates:
        timer.warnings.append("verify: no questions; ranking unchanged")
        return {"rankings": {"verify": _ranking(candidates, state)}, "trace": timer.entry()}
    found = (_match_captions if ctx.verifier == "captions" else _ask_model)(ctx, candidates, questions, timer)
    if found is None:  # the helper said why
        return {"rankings": {"verify": _ranking(candidates, state)}, "trace": timer.entry()}
    answers, p_yes = found
    by_id = {c["id"]: c for c in candidates}
    named = request_words(request_text(state), state.get("edits") or [])
    trust = question_trust(questions, named, ctx.mentions, ctx.settings.unnamed_trust)
    tally = tally_verification(list(by_id), [c["score"] for c in candidates], p_yes, questions, ctx.settings.rerank,
                               ctx.settings.verify_weight, trust, ctx.settings.verify_margin)
    if tally.scores is None:
        reranked = [by_id[i] for i in tally.order]
    else:
        reranked = [{**by_id[i], "score": s} for i, s in zip(tally.order, tally.scores)]
    return {
        "answers": answers,
        "matches": tally.matches,
        "probabilities": tally.probabilities,
        "candidates": reranked,
        "rankings": {"verify": _ranking(reranked, state)},
        "trace": timer.entry(),
    }


def _judge_pairwise(ctx: Context, state: SearchState, top: list[Candidate], timer: StageTimer) -> dict[str, dict[str, Any]]:
    reference = state.get("reference")
    ref_id = state.get("reference_id") or BLANK_ID
    prompt = ctx.prompts["judge"].render(caption=state.get("caption") or BLANK_CAPTION, instruction=request_text(state))
    # ImageScope's judge reasons before its "ANSWER: Yes/No"; a judge asked for one word needs a few tokens
    max_tokens = 200 if "ANSWER:" in prompt else 8

    def ask(candidate: Candidate) -> Reply:
        # Inside the job: an unreadable reference or candidate costs this verdict, not the query.
        ref_image = ImageInput.from_path(reference).pil() if reference else blank_image()
        composite = side_by_side(ref_image, candidate_image(candidate).pil())
        image = ImageInput.from_pil(composite, (ref_id, candidate["id"]))
        return ctx.models.judge.complete(prompt, [image], max_tokens=max_tokens, logprobs=True, stage="judge")

    verdicts: dict[str, dict[str, Any]] = {}
    for candidate, reply in zip(top, run_concurrently(ask, top, ctx.workers)):
        if isinstance(reply, Exception):
            timer.fail(f"judge: {candidate['id'][:12]}: {reply}")
            verdicts[candidate["id"]] = {"verdict": None, "p_yes": None, "reply": ""}
            continue
        timer.count(reply)
        verdict = parse_verdict(reply.text)
        if verdict is None:
            verdict = parse_yes_no(reply.text)
        if verdict is None:
            timer.warnings.append(f"judge: no Yes/No in the reply for {candidate['id'][:12]}")
        p_yes = answer_probability(reply, verdict)
        verdicts[candidate["id"]] = {"verdict": verdict, "p_yes": None if p_yes is None else round(p_yes, 4),
                                     "reply": reply.text.strip()}
    return verdicts


def _judge_listwise(ctx: Context, state: SearchState, top: list[Candidate], timer: StageTimer) -> dict[str, dict[str, Any]]:
    """One call: which of the top candidates (numbered images) fits best; P(each number) as evidence."""
    prompt = ctx.prompts["judge_list"].render(caption=state.get("caption") or BLANK_CAPTION,
                                              instruction=request_text(state), count=str(len(top)))
    empty = {c["id"]: {"verdict": None, "p_yes": None, "reply": ""} for c in top}
    try:
        images = [candidate_image(c) for c in top]
        reply = timer.count(ctx.models.judge.complete(prompt, images, max_tokens=8, logprobs=True, stage="judge_list"))
    except Exception as e:  # an image or model fault costs this judgement, never the query
        timer.fail(f"judge: {e}")
        return empty
    choice = parse_choice(reply.text, len(top))
    probabilities = choice_probabilities(reply, len(top), choice)
    if probabilities is None:
        timer.warnings.append(f"judge: no candidate number in the reply ({reply.text.strip()[:40]!r})")
        return empty
    return {c["id"]: {"verdict": choice == n, "p_yes": round(p, 4), "reply": reply.text.strip()}
            for n, (c, p) in enumerate(zip(top, probabilities), 1)}


def judge(state: SearchState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The judge looks at the top alpha (reference | candidate, or all of them at once when listwise);
    its P(yes) is fused with the ranking so far (or, ImageScope's rule, the first Yes moves to rank 1)."""
    ctx, timer = runtime.context, StageTimer("judge")
    candidates = state.get("candidates") or []
    top = candidates[: ctx.settings.alpha]
    ask = _judge_listwise if ctx.settings.judge_mode == "listwise" else _judge_pairwise
    verdicts = ask(ctx, state, top, timer)
    order = [c["id"] for c in candidates]
    by_id = {c["id"]: c for c in candidates}
    if ctx.settings.rerank == "imagescope":
        reranked = [by_id[i] for i in first_yes_order(order, {k: v["verdict"] for k, v in verdicts.items()}, ctx.settings.alpha)]
    else:
        judged = [i for i in order if verdicts.get(i, {}).get("p_yes") is not None]
        evidence = np.zeros(len(order))
        if judged:
            mean = sum(verdicts[i]["p_yes"] for i in judged) / len(judged)
            evidence = np.array([verdicts[i]["p_yes"] - mean if i in judged else 0.0 for i in order])
        ids, scores = fuse(order, [by_id[i]["score"] for i in order], evidence, ctx.settings.judge_weight)
        reranked = [{**by_id[i], "score": s} for i, s in zip(ids, scores)]
    return {"verdicts": verdicts, "candidates": reranked, "rankings": {"judge": _ranking(reranked, state)}, "trace": timer.entry()}
