"""The full graph in caption mode against a real OpenAI-compatible server (llama.cpp + SmolLM2),
on coco-mini with MiniLM captions. Asserts structure (every stage ran, calls counted, cache hits
on a rerun), not answer quality: a 135M model answers badly, and that is fine here."""

from __future__ import annotations

import json

import pytest

from conftest import MINILM, RANDOM_CLIP, cli_json, run_cli
from lensgraph.graphs.runner import open_context, run_query
from llm_server import CountingProxy, llama_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(llama_server):  # noqa: F811
    p = CountingProxy(llama_server.base_url)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def cir_query(coco):
    q = json.loads((coco / "cir_dev.json").read_text())[5]
    return q["relative_caption"], str(coco / "images" / f"{q['reference_img_id']:012d}.jpg")


def test_full_graph_in_caption_mode_on_a_real_server(coco_searcher, llama_server, proxy, cir_query, tmp_path):  # noqa: F811
    settings = coco_searcher.settings.model_copy(update={
        "llm": f"openai:{llama_server.model_id}", "llm_base_url": proxy.base_url, "vlm": "caption",
        "k": 5, "alpha": 2, "tau": 1.0, "cache": tmp_path / "calls.sqlite", "verifier": "model", "stages": "judge",
    })
    ctx = open_context(settings, coco_searcher)
    state = run_query(ctx, *cir_query)
    stages = [t["stage"] for t in state["trace"]]
    assert stages == ["caption", "reason", "retrieve", "verify", "judge"]  # the plan holds the questions
    calls = sum(t["calls"] for t in state["trace"])
    # one more request than calls: llama.cpp refuses json_schema (HTTP 500), json_object + schema follows
    assert calls + 1 == proxy.requests and calls > 0
    n_questions = len(state["questions"])
    assert n_questions > 0  # the schema makes even a 135M model write some
    assert calls == 1 + 5 * n_questions + 1  # plan, verify k x questions, one listwise judge call over the top alpha
    assert sum(t["rounds"] for t in state["trace"]) == 3
    # the server returned logprobs: evidence is a probability, not only 0 or 1
    probabilities = [p for ps in state["probabilities"].values() for p in ps if p is not None]
    assert probabilities and any(0.0 < p < 1.0 for p in probabilities)
    assert all(v["p_yes"] is None or 0.0 <= v["p_yes"] <= 1.0 for v in state["verdicts"].values())
    assert len(state["candidates"]) == 5 and state["reference_id"] not in state["rankings"]["judge"]
    assert state["descriptions"] and all(isinstance(d, str) and d for d in state["descriptions"])
    assert set(state["verdicts"]) == set(state["rankings"]["verify"][:2])
    print("trace:", json.dumps(state["trace"], indent=1))

    again = run_query(open_context(settings, coco_searcher), *cir_query)
    assert proxy.requests == calls + 1  # nothing reached the server the second time
    assert sum(t["cache_hits"] for t in again["trace"]) == calls
    assert again["rankings"] == state["rankings"]


def test_cli_search_runs_the_graph_and_reuses_the_cache(coco_searcher, llama_server, proxy, cir_query, tmp_path):  # noqa: F811
    text, ref = cir_query
    args = ["search", "--ref", ref, "--text", text, "--db", str(coco_searcher.settings.db),
            "--llm", f"openai:{llama_server.model_id}", "--llm-base-url", proxy.base_url, "--vlm", "caption",
            "--k", "4", "--alpha", "1", "--tau", "1", "--stages", "judge", "--manifest", str(tmp_path / "manifest.json"),
            "--html", str(tmp_path / "report.html")]
    first = cli_json(*args, env={"LENSGRAPH_CACHE": str(tmp_path / "cli-calls.sqlite")})
    assert [t["stage"] for t in first["trace"]] == ["caption", "reason", "retrieve", "verify", "judge"]
    assert len(first["results"]) == 4 and first["manifest"]["calls"] + 1 == proxy.requests  # + the json_schema refusal
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["models"]["llm"]["backend"].startswith("openai|http://127.0.0.1")
    assert set(manifest["prompts"]["files"]) >= {"reason", "propose", "verify", "judge"}
    assert all(r["evidence"] is not None for r in first["results"])  # the caption verifier checked each
    assert manifest["rankings"] == first["rankings"]
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 5 and "verify" in page and "judge" in page
    second = cli_json(*args, env={"LENSGRAPH_CACHE": str(tmp_path / "cli-calls.sqlite")})
    assert second["manifest"]["calls"] == 0 and proxy.requests == first["manifest"]["calls"] + 1
    assert second["results"] == first["results"]


def test_eval_with_a_real_server_scores_every_stage_and_resumes_from_the_cache(coco_searcher, coco, llama_server, proxy, tmp_path):  # noqa: F811
    """`lensgraph eval` end to end (the ImageScope-style baseline) on two coco-mini queries."""
    out = tmp_path / "run"
    args = ["eval", "--dataset", "coco-mini-cir", "--annotations", str(coco), "--images", str(coco),
            "--mode", "caption", "--db", str(coco_searcher.settings.db), "--index", coco_searcher.settings.index,
            "--clip", RANDOM_CLIP, "--text-encoder", MINILM,
            "--llm", f"openai:{llama_server.model_id}", "--llm-base-url", proxy.base_url,
            "--stages", "judge", "--prompts", "imagescope", "--rerank", "imagescope", "--verifier", "model",
            "--verify-batch", "--k", "3", "--alpha", "1", "--limit", "2", "--out", str(out)]
    env = {"LENSGRAPH_CACHE": str(tmp_path / "calls.sqlite")}
    first = cli_json(*args, env=env)
    assert first["queries"] == 2 and first["errors"] == 0
    assert set(first["metrics"]) == {"retrieve", "verify", "judge"}
    calls = first["costs_per_query"]["total"]["calls"] * 2
    assert calls == proxy.requests > 0
    records = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    for r in records:
        assert set(r["rankings"]) == {"retrieve", "verify", "judge"}
        assert r["descriptions"] and isinstance(r["edits"], list)
        verify = next(t for t in r["trace"] if t["stage"] == "verify")
        if r["questions"]:  # --verify-batch: one call per candidate, whatever the number of questions
            assert verify["calls"] + verify["cache_hits"] == 3 and set(r["matches"]) <= set(r["rankings"]["retrieve"][:3])

    (out / "rankings.jsonl").write_text((out / "rankings.jsonl").read_text().splitlines()[0] + "\n")
    again = cli_json(*args, env=env)  # one query redone, entirely from the cache
    assert proxy.requests == calls and again["metrics"] == first["metrics"]

    # the run records what the server serves (GET /models); a folder made against another model is refused
    definition = json.loads((out / "run.json").read_text())
    assert definition["servers"][f"openai:{llama_server.model_id}"]["serves"] == [llama_server.model_id]
    definition["servers"][f"openai:{llama_server.model_id}"]["serves"] = ["another-model.gguf"]
    (out / "run.json").write_text(json.dumps(definition))
    refused = run_cli(*args, env=env)
    assert refused.returncode != 0 and "servers" in refused.stderr and "another-model.gguf" in refused.stderr


def test_the_real_server_constrains_the_plan_and_returns_logprobs(llama_server):  # noqa: F811
    """llama.cpp's server: json_schema refused (HTTP 500), json_object + schema honoured; logprobs."""
    import jsonschema

    from lensgraph.pipeline.models.backends.openai_compat import OpenAIBackend
    from lensgraph.pipeline.reasoning.evidence import answer_probability
    from lensgraph.pipeline.models.calls import Model
    from lensgraph.pipeline.models.prompts import load_prompt_set
    from lensgraph.pipeline.reasoning.replies import parse_yes_no

    prompt = load_prompt_set("default")["reason"]
    backend = OpenAIBackend(llama_server.model_id, base_url=llama_server.base_url)
    model = Model("openai:smollm2", backend, retries=0)
    reply = model.complete(prompt.render(caption="A dog on a sofa.", instruction="add a cat"), max_tokens=400,
                           schema=prompt.schema)
    assert backend.formats[0] == "json_object_schema"
    if reply.finish_reason == "stop":  # a reply cut by max_tokens is incomplete JSON by nature
        jsonschema.validate(json.loads(reply.text), prompt.schema)
    answer = model.complete("The image: a dog on a sofa.\nIs there a dog? Answer with one word, Yes or No.",
                            max_tokens=2, logprobs=True)
    assert answer.logprobs and all(v <= 0 for position in answer.logprobs for v in position.values())
    p_yes = answer_probability(answer, parse_yes_no(answer.text))
    assert p_yes is None or 0.0 <= p_yes <= 1.0
    first = answer.text.strip().split()[0].strip(".,!").lower() if answer.text.strip() else ""
    if first in ("yes", "no") and p_yes is not None:
        assert (p_yes >= 0.5) == (first == "yes")  # greedy: the answer given is the likelier one


def test_tokens_per_stage_come_from_the_real_server(coco_searcher, llama_server, cir_query, tmp_path):  # noqa: F811
    """The trace counts what the server reports (OpenAI's usage fields); cached replies cost none."""
    settings = coco_searcher.settings.model_copy(update={
        "llm": f"openai:{llama_server.model_id}", "llm_base_url": llama_server.base_url, "vlm": "caption",
        "k": 5, "tau": 1.0, "cache": tmp_path / "calls.sqlite"})
    state = run_query(open_context(settings, coco_searcher), *cir_query)
    reason = next(t for t in state["trace"] if t["stage"] == "reason")
    assert reason["calls"] == 1 and reason["prompt_tokens"] > 300 and 0 < reason["completion_tokens"] <= 400
    judge = state["trace"][-1]
    assert judge["stage"] == "judge" and judge["skipped"] and judge["prompt_tokens"] == 0  # caption mode: left out
    again = run_query(open_context(settings, coco_searcher), *cir_query)
    cached = next(t for t in again["trace"] if t["stage"] == "reason")
    assert cached["cache_hits"] == 1 and cached["prompt_tokens"] == cached["completion_tokens"] == 0


def test_concurrent_queries_on_one_server_get_their_own_answers(coco_searcher, coco, llama_server, tmp_path):  # noqa: F811
    """Queries sharing one server (which reuses the previous prompt's prefix) at once get the same
    plans as one after another: no answer crosses to another query and no prefix corrupts another."""
    from concurrent.futures import ThreadPoolExecutor

    by_reference = {q["reference_img_id"]: q for q in json.loads((coco / "cir_dev.json").read_text())}
    items = list(by_reference.values())[:6]  # six references: the prompts share only the fixed part
    queries = [(q["relative_caption"], str(coco / "images" / f"{q['reference_img_id']:012d}.jpg")) for q in items]
    settings = coco_searcher.settings.model_copy(update={
        "llm": f"openai:{llama_server.model_id}", "llm_base_url": llama_server.base_url, "vlm": "caption",
        "k": 5, "tau": 1.0, "no_cache": True, "max_concurrency": 4})
    ctx = open_context(settings, coco_searcher)
    one_by_one = [run_query(ctx, *q) for q in queries]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda q: run_query(ctx, *q), queries))
    for alone, shared in zip(one_by_one, together):
        assert shared["edits"] == alone["edits"] and shared["descriptions"] == alone["descriptions"]
        assert shared["rankings"] == alone["rankings"]
