"""The reasoning graph's logic with a scripted model, on the real coco-mini index in caption mode."""

from __future__ import annotations

import json
import re

import pytest

from fakes import ScriptedBackend, context, stage_of
from lensgraph.pipeline.reasoning.planning import CHECKS
from lensgraph.pipeline.reasoning.lexicon import load_lexicon
from lensgraph.pipeline.reasoning.objects import match
from lensgraph.graphs.context import Context
from lensgraph.graphs.runner import caption_lookup, run_query
from lensgraph.pipeline.models.backends import Models
from lensgraph.pipeline.models.backends.caption_mode import CaptionVisionBackend
from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.models.calls import CallCache, Model, ModelError, TransientError
from lensgraph.pipeline.models.prompts import load_prompt_set
from lensgraph.pipeline.reasoning.evidence import count_order, first_yes_order
from lensgraph.pipeline.reasoning.replies import (
    parse_questions,
    parse_reasoning,
    parse_verdict,
    parse_yes_no,
)

REASON_REPLY = json.dumps({
    "edits": [{"type": "addition", "text": "an oven"}, {"type": "removal", "text": "cake"}],
    "descriptions": {"core": "an oven", "attributes": "a kitchen with an oven", "full": "A kitchen with an oven and people."},
})
PROPOSE_REPLY = json.dumps({"questions": [
    {"question": "Is there an oven?", "expected": "yes"},
    {"question": "Is there a cake?", "expected": "no"},
]})
PLAN_REPLY = json.dumps({**json.loads(REASON_REPLY), **json.loads(PROPOSE_REPLY)})


def honest_script(request) -> str:
    """A tiny 'model' that answers from the descriptions caption mode gives it."""
    stage = stage_of(request)
    if stage == "reason":
        return PLAN_REPLY if request.schema is not None else REASON_REPLY
    if stage == "propose":
        return PROPOSE_REPLY
    if stage == "verify":
        seen = re.search(r"The image: (.*)", request.prompt).group(1).lower()
        noun = re.search(r"Question: Is there an? (\w+)\?", request.prompt).group(1)
        return "Yes" if noun in seen else "No"
    if stage == "judge":
        right = request.prompt.split("right:")[1].split("\n")[0].lower()
        if "ANSWER: Yes" not in request.prompt:  # the default judge: one word
            return "Yes" if "oven" in right else "No"
        return "The candidate has an oven.\nANSWER: Yes" if "oven" in right else "No oven.\nANSWER: No"
    return "A photo."


@pytest.fixture
def make_ctx(coco_searcher):
    def make(script=honest_script, stages="judge", cache=None, k=10, alpha=3, prompt_set="imagescope",
             rerank="imagescope", judge_mode="pairwise", **options) -> tuple[Context, ScriptedBackend]:
        """The ImageScope-faithful two-call path by default; prompt_set="default" for the planning call."""
        prompts = load_prompt_set(prompt_set)
        backend = ScriptedBackend(script)
        llm = Model("scripted", backend, cache, retries=1, backoff=0.01)
        vision = Model("caption", CaptionVisionBackend(llm, caption_lookup(coco_searcher), prompts["caption_vision"]))
        models = Models(llm=llm, captioner=vision, verifier=vision, judge=vision)
        ctx = context(coco_searcher, models, prompts, k=k, tau=1.0, alpha=alpha, stages=stages, max_concurrency=2,
                      rerank=rerank, judge_mode=judge_mode, **options)
        return ctx, backend

    return make


@pytest.fixture(scope="module")
def oven_query(coco):
    q = json.loads((coco / "cir_dev.json").read_text())[0]
    assert q["relative_caption"] == "also has an oven"
    return str(coco / "images" / f"{q['reference_img_id']:012d}.jpg"), q["relative_caption"]


def stages_run(state) -> list[str]:
    return [t["stage"] for t in state["trace"]]


@pytest.mark.parametrize(
    "stages, expected",
    [
        ("retrieve", ["caption", "retrieve"]),
        ("reason", ["caption", "reason", "retrieve"]),
        ("verify", ["caption", "reason", "retrieve", "propose", "verify"]),
        ("judge", ["caption", "reason", "retrieve", "propose", "verify", "judge"]),
    ],
)
def test_stage_prefixes(make_ctx, oven_query, stages, expected):
    ctx, backend = make_ctx(stages=stages)
    state = run_query(ctx, oven_query[1], oven_query[0])
    assert stages_run(state) == expected
    assert state["reference_id"] not in state["rankings"]["retrieve"]
    assert len(state["candidates"]) == 10
    if stages == "retrieve":
        assert backend.history == []  # no LLM at all
        assert state["descriptions"] == [state["caption"] + " also has an oven"]
    calls = {s: sum(stage_of(r) == s for r in backend.history) for s in ("reason", "propose", "verify", "judge")}
    assert calls["reason"] == (stages != "retrieve")
    if stages in ("verify", "judge"):
        assert calls["verify"] == 10 * 2  # one call per candidate x question
    assert calls["judge"] == (3 if stages == "judge" else 0)
    caption = state["trace"][0]
    assert caption["stage"] == "caption" and caption["source"] == "index" and caption["calls"] == 0  # stored: no model


def test_full_graph_reranks_by_verification_and_judge(make_ctx, oven_query, coco_searcher):
    ctx, _ = make_ctx()
    state = run_query(ctx, oven_query[1], oven_query[0])
    assert state["caption"]  # the stored caption of the reference
    assert state["descriptions"] == ["an oven", "a kitchen with an oven", "A kitchen with an oven and people."]
    assert [q["expected"] for q in state["questions"]] == ["yes", "no"]
    captions = {i: m["caption"].lower() for i, m in coco_searcher.index.metadata(state["rankings"]["retrieve"]).items()}
    verified = state["rankings"]["verify"]
    score = lambda i: ("oven" in captions[i]) + ("cake" not in captions[i])  # noqa: E731
    assert [score(i) for i in verified] == sorted((score(i) for i in verified), reverse=True)
    # stable: equal scores keep their retrieval order
    retrieved = state["rankings"]["retrieve"]
    ties = [(a, b) for a, b in zip(verified, verified[1:]) if score(a) == score(b)]
    assert ties  # ten candidates, three scores: the stability check below is never vacuous
    for a, b in ties:
        assert retrieved.index(a) < retrieved.index(b)
    judged = state["rankings"]["judge"]
    first_yes = next((i for i in verified[:3] if "oven" in captions[i]), None)
    assert judged[0] == (first_yes or verified[0])
    assert set(state["verdicts"]) == set(verified[:3])
    for entry in state["trace"]:
        assert entry["seconds"] >= 0 and not entry["warnings"], entry


def test_text_to_image_uses_the_blank_reference(make_ctx):
    ctx, backend = make_ctx()
    state = run_query(ctx, "a dog on a couch")
    assert state["caption"] == "A blank image." and state["reference_id"] is None
    judge_prompts = [r.prompt for r in backend.history if stage_of(r) == "judge"]
    assert judge_prompts and all("left: A blank image." in p for p in judge_prompts)


def test_garbage_everywhere_degrades_to_previous_rankings_with_warnings(make_ctx, oven_query):
    def garbage(request):
        return "I am not sure what you mean." if stage_of(request) != "verify" else "maybe"

    ctx, _ = make_ctx(garbage)
    state = run_query(ctx, oven_query[1], oven_query[0])
    warnings = {t["stage"]: " ".join(t["warnings"]) for t in state["trace"]}
    assert "no usable descriptions" in warnings["reason"]
    assert state["descriptions"] == [state["caption"] + " also has an oven"]
    assert "no usable questions" in warnings["propose"]
    assert state["rankings"]["verify"] == state["rankings"]["retrieve"]
    assert state["rankings"]["judge"] == state["rankings"]["retrieve"]


def test_failing_verifier_and_judge_leave_the_ranking_and_say_why(make_ctx, oven_query):
    def broken(request):
        stage = stage_of(request)
        if stage in ("verify", "judge"):
            return TransientError("HTTP 503")
        return honest_script(request)

    ctx, _ = make_ctx(broken)
    state = run_query(ctx, oven_query[1], oven_query[0])
    warnings = {t["stage"]: " ".join(t["warnings"]) for t in state["trace"]}
    assert "every call failed" in warnings["verify"] and "503" in warnings["verify"]
    assert "503" in warnings["judge"]
    assert state["rankings"]["verify"] == state["rankings"]["retrieve"] == state["rankings"]["judge"]


def test_second_identical_run_makes_no_model_calls(make_ctx, oven_query, tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    ctx, backend = make_ctx(cache=cache)
    first = run_query(ctx, oven_query[1], oven_query[0])
    n = len(backend.history)
    assert n == sum(t["calls"] for t in first["trace"]) > 0
    ctx2, backend2 = make_ctx(cache=cache)
    second = run_query(ctx2, oven_query[1], oven_query[0])
    assert backend2.history == []
    assert sum(t["calls"] for t in second["trace"]) == 0
    assert sum(t["cache_hits"] for t in second["trace"]) == n
    assert second["rankings"] == first["rankings"]


def test_changing_one_prompt_reruns_that_stage_only(make_ctx, oven_query, tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    ctx, backend = make_ctx(cache=cache, stages="verify", prompt_set="default")
    run_query(ctx, oven_query[1], oven_query[0])
    custom = tmp_path / "myset"
    custom.mkdir()
    (custom / "verify.txt").write_text("Answer with one word, Yes or No.\nQuestion: {question}\nAnswer:\n")
    ctx2, backend2 = make_ctx(cache=cache, stages="verify", prompt_set="default")
    ctx2.prompts = load_prompt_set(custom)
    ctx2.models.verifier.backend.template = ctx2.prompts["caption_vision"]
    run_query(ctx2, oven_query[1], oven_query[0])
    assert {stage_of(r) for r in backend2.history} == {"verify"}


# -- parsing and ordering ------------------------------------------------------------------------


def test_parse_reasoning_formats():
    fenced = "Sure!\n```json\n" + REASON_REPLY + "\n```"
    assert parse_reasoning(fenced, "c", "i").value["descriptions"][0] == "an oven"
    broken = REASON_REPLY[:-3]  # cut off: json-repair recovers it
    parsed = parse_reasoning(broken, "c", "i")
    assert parsed.warning is None and parsed.value["edits"][1] == {"type": "removal", "text": "cake"}
    cireval = parse_reasoning("Edited Description: A kitchen with an oven.\nInstruction: x", "c", "i")
    assert cireval.value["descriptions"] == ["A kitchen with an oven."]
    garbage = parse_reasoning("no idea", "A cat.", "make it a dog")
    assert garbage.value["descriptions"] == ["A cat. make it a dog"] and "no usable" in garbage.warning
    odd = parse_reasoning('{"edits": [{"type": "swap", "text": "x"}], "descriptions": ["a", "b"]}', "c", "i")
    assert odd.value == {"edits": [{"type": "modification", "text": "x"}], "descriptions": ["a", "b"]}


def test_parse_questions_and_removals_expect_no():
    parsed = parse_questions(PROPOSE_REPLY, [])
    assert parsed.value[1] == {"question": "Is there a cake?", "expected": "no"}
    fallback = parse_questions("nope", [{"type": "removal", "text": "the oven"}, {"type": "addition", "text": "a dog"}])
    assert fallback.value == [
        {"question": "Does the image show the oven?", "expected": "no"},
        {"question": "Does the image show a dog?", "expected": "yes"},
    ]
    assert "one question per edit" in fallback.warning


@pytest.mark.parametrize("text, want", [("Yes.", True), ("no", False), ("**No**, it is not", False), ("maybe", None), ("Yesterday", None)])
def test_parse_yes_no(text, want):
    assert parse_yes_no(text) is want


@pytest.mark.parametrize(
    "text, want",
    [("blah\nANSWER: Yes", True), ("answer: no", False), ("ANSWER: No ... wait. ANSWER: Yes", True), ("Yes", None)],
)
def test_parse_verdict(text, want):
    assert parse_verdict(text) is want


def test_orders():
    assert count_order(["a", "b", "c", "d"], {"c": 2, "b": 2, "d": 1}) == ["b", "c", "d", "a"]
    assert first_yes_order(["a", "b", "c", "d"], {"a": False, "b": None, "c": True}, 3) == ["c", "a", "b", "d"]
    assert first_yes_order(["a", "b", "c", "d"], {"d": True}, 3) == ["a", "b", "c", "d"]  # d is beyond alpha
    assert first_yes_order(["a", "b"], {"a": True, "b": True}, 3) == ["a", "b"]


def test_model_retries_transient_errors_then_gives_up():
    attempts = []

    def flaky(request):
        attempts.append(1)
        return TransientError("HTTP 429") if len(attempts) < 3 else "ok"

    model = Model("flaky", ScriptedBackend(flaky), retries=3, backoff=0.001)
    assert model.complete("hi").text == "ok" and model.stats.calls == 1 and len(attempts) == 3
    dead = Model("dead", ScriptedBackend(lambda r: TransientError("HTTP 500")), retries=2, backoff=0.001)
    with pytest.raises(ModelError, match="gave up after 3 attempts"):
        dead.complete("hi")
    assert issubclass(ModelError, LensgraphError)


def test_depth_keeps_the_retrieval_tail_behind_the_reranked_top_k(make_ctx, oven_query):
    ctx, _ = make_ctx(k=5)
    ctx.depth = 30
    state = run_query(ctx, oven_query[1], oven_query[0])
    retrieved = state["rankings"]["retrieve"]
    assert len(retrieved) == 30 and len(state["candidates"]) == 5
    for stage in ("verify", "judge"):
        ranking = state["rankings"][stage]
        assert sorted(ranking[:5]) == sorted(retrieved[:5]) and ranking[5:] == retrieved[5:]


def test_batched_verification_asks_each_candidate_once(make_ctx, oven_query):
    def script(request):
        if "Answer every question" not in request.prompt:
            return honest_script(request)
        seen = re.search(r"The image: (.*)", request.prompt).group(1).lower()
        nouns = re.findall(r"^\d+\. Is there an? (\w+)\?", request.prompt, re.MULTILINE)
        return "\n".join(f"{n}. {'Yes' if noun in seen else 'No'}" for n, noun in enumerate(nouns, 1))

    per_question, _ = make_ctx(stages="verify")
    batched, backend = make_ctx(script, stages="verify")
    batched = batched.configured(verify_batch=True)
    a = run_query(per_question, oven_query[1], oven_query[0])
    b = run_query(batched, oven_query[1], oven_query[0])
    assert sum("Answer every question" in r.prompt for r in backend.history) == 10  # k candidates, not k x 2
    assert b["matches"] == a["matches"] and b["rankings"]["verify"] == a["rankings"]["verify"]


@pytest.mark.parametrize(
    "text, want",
    [("1. Yes\n2. No", [True, False]), ("2: no\n1: yes", [True, False]), ("Yes, no.", [True, False]),
     ("1. Yes", [True, None]), ("", [None, None])],
)
def test_parse_numbered_yes_no(text, want):
    from lensgraph.pipeline.reasoning.replies import parse_numbered_yes_no

    assert parse_numbered_yes_no(text, 2) == want


def test_json_mode_follows_the_prompt_and_single_rewrites_parse():
    assert load_prompt_set("default")["reason"].wants_json and load_prompt_set("default")["reason"].schema
    assert load_prompt_set("imagescope")["reason"].schema is None  # the two-call baseline: JSON mode only
    assert not load_prompt_set("cireval")["reason"].wants_json
    parsed = parse_reasoning('{"Image Content": "a cat", "Edited Description": "a dog on a sofa"}', "a cat", "dog")
    assert parsed.warning is None and parsed.value["descriptions"] == ["a dog on a sofa"]


def test_the_compiled_graph_works_as_a_subgraph(make_ctx):
    from langgraph.graph import END, START, StateGraph

    from lensgraph.graphs.graph import graph
    from lensgraph.graphs.state import SearchState

    def after(state: SearchState) -> dict:
        return {"trace": [{"stage": "parent", "seconds": 0, "calls": 0, "cache_hits": 0, "warnings": []}]}

    parent = StateGraph(SearchState, context_schema=Context)
    parent.add_node("lensgraph", graph)
    parent.add_node("after", after)
    parent.add_edge(START, "lensgraph")
    parent.add_edge("lensgraph", "after")
    parent.add_edge("after", END)
    ctx, _ = make_ctx(stages="retrieve")
    state = parent.compile().invoke({"instruction": "a dog on a couch"}, context=ctx)
    assert [t["stage"] for t in state["trace"]] == ["caption", "retrieve", "parent"]
    assert len(state["candidates"]) == 10


def test_query_text_is_averaged_in_with_the_descriptions(make_ctx, oven_query, coco_searcher, monkeypatch):
    ctx, _ = make_ctx(stages="reason", query_text=True)
    seen = []
    original = coco_searcher.search_texts
    monkeypatch.setattr(coco_searcher, "search_texts", lambda texts, **kw: seen.append(texts) or original(texts, **kw))
    state = run_query(ctx, oven_query[1], oven_query[0])
    assert seen[0][:3] == state["descriptions"] and seen[0][3] == state["caption"] + " also has an oven"


# -- the default path: one planning call, evidence, fusion ---------------------------------------


def test_the_plan_holds_the_questions_so_propose_is_skipped(make_ctx, oven_query):
    ctx, backend = make_ctx(prompt_set="default", rerank="fuse", verify_weight=4.0, plan_checks=("questions_from_edits",))
    state = run_query(ctx, oven_query[1], oven_query[0])
    assert stages_run(state) == ["caption", "reason", "retrieve", "verify", "judge"]
    reason = [r for r in backend.history if stage_of(r) == "reason"]
    assert len(reason) == 1 and reason[0].schema is not None and reason[0].json  # schema-constrained JSON
    assert state["questions"] == json.loads(PROPOSE_REPLY)["questions"]
    rounds = [t["rounds"] for t in state["trace"]]
    assert sum(rounds) == 3  # plan, verify, judge: each stage's calls run together
    assert all(len(p) == 2 for p in state["probabilities"].values())


def test_uninformative_verification_leaves_the_retrieval_order(make_ctx, oven_query):
    def same_answer(request):
        return "Yes" if stage_of(request) == "verify" else honest_script(request)

    ctx, _ = make_ctx(same_answer, stages="verify", prompt_set="default", rerank="fuse", verify_weight=50.0)
    state = run_query(ctx, oven_query[1], oven_query[0])
    assert state["rankings"]["verify"] == state["rankings"]["retrieve"]


def test_strong_evidence_lifts_the_candidates_that_pass(make_ctx, oven_query, coco_searcher):
    # every question trusted and no margin: evidence decides, retrieval breaks ties
    ctx, _ = make_ctx(stages="verify", prompt_set="default", rerank="fuse", verify_weight=50.0, verify_margin=100.0,
                      unnamed_trust=1.0)
    state = run_query(ctx, oven_query[1], oven_query[0])
    captions = {i: m["caption"].lower() for i, m in coco_searcher.index.metadata(state["rankings"]["retrieve"]).items()}
    passes = [("oven" in captions[i]) + ("cake" not in captions[i]) for i in state["rankings"]["verify"][:10]]
    assert passes == sorted(passes, reverse=True) and len(set(passes)) > 1


def test_the_caption_verifier_makes_no_model_call(make_ctx, oven_query, coco_searcher):
    ctx, backend = make_ctx(stages="verify", prompt_set="default", rerank="fuse", verify_weight=50.0, verifier="captions")
    state = run_query(ctx, oven_query[1], oven_query[0])
    assert {stage_of(r) for r in backend.history} == {"reason"}
    verify = next(t for t in state["trace"] if t["stage"] == "verify")
    assert verify["calls"] == verify["cache_hits"] == verify["rounds"] == 0
    captions = {i: m["caption"].lower() for i, m in coco_searcher.index.metadata(state["rankings"]["retrieve"]).items()}
    lexicon = load_lexicon()  # "cookies" are cakes to WordNet (and to the matcher)
    for cid, (oven, cake) in state["probabilities"].items():
        assert (oven > 0.5) == (match("oven", captions[cid], lexicon) > 0)
        assert (cake > 0.5) == (match("cake", captions[cid], lexicon) == 0)


def test_a_missing_candidate_file_costs_that_candidate_only(make_ctx, oven_query, tmp_path):
    ctx, _ = make_ctx(stages="verify", prompt_set="default", rerank="fuse")
    original = ctx.gallery.search_texts

    def with_a_moved_file(*args, **kwargs):
        hits = original(*args, **kwargs)
        from dataclasses import replace

        return [replace(hits[0], path=str(tmp_path / "moved.jpg"))] + hits[1:]

    ctx.gallery.search_texts = with_a_moved_file
    try:
        state = run_query(ctx, oven_query[1], oven_query[0])
    finally:
        del ctx.gallery.search_texts
    verify = next(t for t in state["trace"] if t["stage"] == "verify")
    assert verify["failures"] == 2 and "2/20 calls failed" in verify["warnings"][0]
    assert len(state["rankings"]["verify"]) == 10


def test_listwise_judge_one_call_and_malformed_replies(make_ctx, oven_query):
    def listwise(reply):
        def script(request):
            return reply if stage_of(request) == "judge_list" else honest_script(request)
        return script

    ctx, backend = make_ctx(listwise("2"), prompt_set="default", rerank="fuse", judge_mode="listwise", judge_weight=50.0)
    state = run_query(ctx, oven_query[1], oven_query[0])
    assert sum(stage_of(r) == "judge_list" for r in backend.history) == 1
    assert state["rankings"]["judge"][0] == state["rankings"]["verify"][1]
    assert [v["verdict"] for v in state["verdicts"].values()] == [False, True, False]
    ctx, _ = make_ctx(listwise("I like them all"), prompt_set="default", rerank="fuse", judge_mode="listwise")
    state = run_query(ctx, oven_query[1], oven_query[0])
    judge = next(t for t in state["trace"] if t["stage"] == "judge")
    assert "no candidate number" in judge["warnings"][0]
    assert state["rankings"]["judge"] == state["rankings"]["verify"]


def test_results_carry_evidence_and_the_threshold_drops_the_weak(make_ctx, oven_query, coco_searcher):
    ctx, _ = make_ctx(stages="verify", prompt_set="default", rerank="fuse", verify_weight=4.0, verifier="captions")
    state = run_query(ctx, oven_query[1], oven_query[0])
    everything = coco_searcher.results_of(state)
    assert len(everything) == 10 and all(r.evidence and r.relevance is not None for r in everything)
    kept = coco_searcher.results_of(state, threshold=0.9)
    assert 0 < len(kept) < 10 and all(r.relevance >= 0.9 for r in kept)
    assert [r.rank for r in kept] == list(range(1, len(kept) + 1))
    assert coco_searcher.results_of(state, threshold=1.0).results == []
    unverified = run_query(make_ctx(stages="reason", prompt_set="default")[0], oven_query[1], oven_query[0])
    assert coco_searcher.results_of(unverified, threshold=0.1).results == []  # nothing verified: nothing passes


def test_text_weights_are_a_weighted_mean_of_the_scores(coco_searcher):
    texts = ["a dog on a couch", "a kitchen with an oven"]
    alone = coco_searcher.search_texts(texts[:1], k=5, tau=1.0)
    weighted = coco_searcher.search_texts(texts, k=5, tau=1.0, weights=[1.0, 0.0])
    assert [h.id for h in weighted] == [h.id for h in alone]
    assert [round(h.score, 5) for h in weighted] == [round(h.score, 5) for h in alone]
    even = coco_searcher.search_texts(texts, k=5, tau=1.0)
    assert [h.id for h in coco_searcher.search_texts(texts, k=5, tau=1.0, weights=[2.0, 2.0])] == [h.id for h in even]


def test_a_stage_left_out_by_default_says_why_in_the_trace(make_ctx, oven_query):
    # caption mode's settings, no stages asked for: as far as the models allow, less the judge
    ctx, backend = make_ctx(stages=None, llm="openai:scripted", vlm="caption", prompt_set="default", rerank="fuse",
                            verifier="captions")
    state = run_query(ctx, oven_query[1], oven_query[0])
    judge = state["trace"][-1]
    assert judge["stage"] == "judge" and judge["calls"] == 0 and "caption mode" in judge["skipped"]
    assert "judge" not in state["rankings"] and {stage_of(r) for r in backend.history} == {"reason"}


def test_the_raw_request_is_retrieved_first_while_the_plan_is_made(make_ctx, oven_query):
    from lensgraph.graphs.runner import stream_query

    ctx, _ = make_ctx(stages="verify", prompt_set="default", rerank="fuse", verifier="captions")
    events = list(stream_query(ctx, oven_query[1], oven_query[0]))
    assert [e[0] for e in events][:3] == ["preview", "caption", "reason"]
    plain = run_query(ctx.configured(stages="retrieve"), oven_query[1], oven_query[0])
    preview = events[0][1]["rankings"]["preview"]
    assert preview == plain["rankings"]["retrieve"][: ctx.settings.k]  # no model: what no-LLM retrieval gives
    assert [e[0] for e in stream_query(ctx.configured(stages="retrieve"), oven_query[1], oven_query[0])][0] == "caption"


@pytest.mark.parametrize("stage", ["reason", "propose"])
def test_an_unexpected_backend_error_costs_the_stage_not_the_query(make_ctx, oven_query, stage):
    """Not only our own errors: a backend's bug (a RuntimeError, a KeyError) degrades the stage."""
    def script(request):
        if stage_of(request) == stage:
            raise RuntimeError("the backend broke in an unexpected way")
        return honest_script(request)

    prompt_set = "default" if stage == "reason" else "imagescope"
    ctx, _ = make_ctx(script, stages="verify", prompt_set=prompt_set)
    state = run_query(ctx, oven_query[1], oven_query[0])
    entry = next(t for t in state["trace"] if t["stage"] == stage)
    assert entry["failures"] == 1 and "broke in an unexpected way" in " ".join(entry["warnings"])
    assert state["rankings"]["retrieve"]  # the query went on


@pytest.mark.parametrize("translated", ["There is also an oven.", None])
def test_a_request_in_another_language_is_translated_before_the_plan(make_ctx, oven_query, translated):
    """The plan, its checks and retrieval read the request in English; a failed translation costs the
    translation only (the plan reads the request as written, the English-word checks stand aside)."""
    def script(request):
        if stage_of(request) == "translate":
            assert "il y a aussi un four" in request.prompt
            return RuntimeError("the server went away") if translated is None else translated
        if stage_of(request) == "reason":
            planned = json.dumps({"add": ["an oven"], "remove": [], "change": [], "target": "A kitchen with an oven."})
            return planned if translated is None or translated in request.prompt else "{}"
        return honest_script(request)

    ctx, backend = make_ctx(script, stages="verify", prompt_set="default", rerank="fuse", plan_checks=CHECKS)
    state = run_query(ctx, "il y a aussi un four", oven_query[0])
    reason = next(t for t in state["trace"] if t["stage"] == "reason")
    assert state["edits"] == [{"type": "addition", "text": "an oven"}]
    assert state["questions"] == [{"question": "Is there an oven?", "expected": "yes"}]
    if translated:
        assert state["translation"] == translated and reason["calls"] == 2 and not reason["warnings"]
    else:
        assert "translation" not in state and reason["failures"] == 1
        assert any("reads as fr" in f for f in reason["fixes"]), reason  # the English-word checks stood aside
    assert [stage_of(r) for r in backend.history].count("translate") == 1
    # an English request is not translated
    run_query(ctx, "also has an oven", oven_query[0])
    assert [stage_of(r) for r in backend.history].count("translate") == 1
