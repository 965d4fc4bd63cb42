"""The `hf:` backend on real architectures with tiny random weights, loaded by path as users do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lensgraph.pipeline.models.backends.hf_local import HFBackend
from lensgraph.pipeline.errors import LensgraphError, ModelUnavailable
from lensgraph.pipeline.models.calls import CallCache, ImageInput, Model, ModelError, Request
from tiny_hf_models import build_idefics3, build_qwen2_vl, build_text_llm, greedy_new_tokens, with_end_tokens

PROMPTS = ["a cat on a sofa", "Is there an oven?", "Describe the image in one sentence.", "two people ride bicycles"]


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    return build_text_llm(tmp_path_factory.mktemp("hf") / "qwen2-tiny")


@pytest.fixture(scope="module")
def llm(llm_dir) -> HFBackend:
    return HFBackend(f"hf:{llm_dir}")


@pytest.fixture(scope="module", params=["idefics3", "qwen2-vl"])
def vlm(request, tmp_path_factory) -> HFBackend:
    build = {"idefics3": build_idefics3, "qwen2-vl": build_qwen2_vl}[request.param]
    return HFBackend(f"hf:{build(tmp_path_factory.mktemp('hf') / request.param)}")


@pytest.fixture(scope="module")
def photos(coco) -> list[ImageInput]:
    return [ImageInput.from_path(p) for p in sorted((coco / "images").glob("*.jpg"))[:3]]


# --- text LLM ---------------------------------------------------------------------------------


def test_text_model_loads_by_path(llm, llm_dir):
    assert (llm.kind, llm.max_concurrency, llm.cacheable, llm.vision) == ("hf", 1, True, False)
    assert llm.model_id == str(llm_dir)
    assert llm.identity.startswith(f"hf|{llm_dir}|")


def test_spec_factory_builds_it(llm_dir, tmp_path):
    from lensgraph.pipeline.models.backends import build_backend
    from lensgraph.pipeline.settings import load_settings

    backend = build_backend(f"hf:{llm_dir}", load_settings(db=tmp_path / "db"), None)
    assert isinstance(backend, HFBackend) and backend.model_id == str(llm_dir)


def test_text_reply_is_the_greedy_new_tokens_cut_at_max_tokens(llm, llm_dir):
    reply = llm.generate(Request(PROMPTS[0], max_tokens=5))
    expected = llm.tokenizer.decode(greedy_new_tokens(llm_dir, PROMPTS[0], 5), skip_special_tokens=True).strip()
    assert isinstance(reply.text, str) and reply.text == expected
    assert reply.finish_reason == "length"


def test_logprobs_are_the_top_alternatives_of_the_first_steps(llm, llm_dir):
    import math

    reply = llm.generate(Request(PROMPTS[1], max_tokens=3, logprobs=True))
    assert reply.logprobs is not None and len(reply.logprobs) == 3
    greedy = greedy_new_tokens(llm_dir, PROMPTS[1], 3)
    for step, alternatives in zip(greedy, reply.logprobs):
        assert 0 < len(alternatives) <= 10 and all(v <= 0 for v in alternatives.values())
        assert sum(math.exp(v) for v in alternatives.values()) <= 1 + 1e-6
        assert llm.tokenizer.decode([step]) in alternatives  # greedy decoding took one of the most likely
    assert llm.generate(Request(PROMPTS[1], max_tokens=3)).logprobs is None
    # a batch computes them only for the rows that asked, and the text is unchanged by asking
    batch = llm.generate_batch([Request(PROMPTS[1], max_tokens=3, logprobs=True), Request(PROMPTS[2], max_tokens=3)])
    assert batch[0].logprobs is not None and batch[1].logprobs is None and batch[0].text == reply.text


def test_logprobs_are_the_models_own_not_after_a_repetition_penalty(llm):
    """P(yes) must be what the model believes: a generation setting that reshapes the scores (here a
    repetition penalty on the prompt's tokens) must not change the reported log probabilities."""
    import torch

    request = Request(PROMPTS[1], max_tokens=1, logprobs=True)
    inputs = llm.tokenizer([llm._prompt_text(request)], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        raw = llm.model(**inputs).logits[0, -1].float().log_softmax(-1)
    config = llm.model.generation_config
    before, config.repetition_penalty = config.repetition_penalty, 5.0
    try:
        alternatives = llm.generate(request).logprobs[0]
    finally:
        config.repetition_penalty = before
    values, ids = raw.topk(3)
    for value, token_id in zip(values.tolist(), ids.tolist()):
        assert alternatives[llm.tokenizer.decode([token_id])] == pytest.approx(value, abs=1e-4)


def test_system_message_changes_the_prompt(llm):
    plain = llm._prompt_text(Request("hello"))
    with_system = llm._prompt_text(Request("hello", system="Answer in JSON."))
    assert "Answer in JSON." in with_system and "Answer in JSON." not in plain
    assert llm._prompt_text(Request("hello", json=True)) == plain  # no JSON mode: json adds nothing


def test_batch_matches_single_requests_in_order(llm):
    requests = [Request(p, max_tokens=8) for p in PROMPTS]
    singles = [llm.generate(r) for r in requests]
    assert len({s.text for s in singles}) > 1, "tiny model ignores its input; the order check would be void"
    assert llm.generate_batch(requests) == singles


def test_batch_with_mixed_settings_keeps_order(llm):
    requests = [Request(PROMPTS[0], max_tokens=3), Request(PROMPTS[1], max_tokens=6), Request(PROMPTS[2], max_tokens=3)]
    assert llm.generate_batch(requests) == [llm.generate(r) for r in requests]


def test_sampling_when_temperature_is_positive(llm):
    import torch

    torch.manual_seed(1)
    replies = llm.generate_batch([Request(PROMPTS[0], max_tokens=6, temperature=1.5)] * 3)
    assert all(isinstance(r.text, str) and r.finish_reason in ("stop", "length") for r in replies)


def test_end_token_stops_one_row_of_a_batch(llm_dir, tmp_path):
    """A row that writes an end-of-turn id stops ("stop", text cut before it) while its batch
    neighbour runs on to max_tokens ("length")."""
    first = greedy_new_tokens(llm_dir, PROMPTS[0], 8)
    end = first[3]
    other = next(p for p in PROMPTS[1:] if end not in greedy_new_tokens(llm_dir, p, 8))
    backend = HFBackend(f"hf:{with_end_tokens(llm_dir, tmp_path / 'stops', [end])}")
    stopping, running = Request(PROMPTS[0], max_tokens=8), Request(other, max_tokens=8)
    batch = backend.generate_batch([stopping, running])
    assert [r.finish_reason for r in batch] == ["stop", "length"]
    assert batch == [backend.generate(stopping), backend.generate(running)]
    assert batch[0].text == backend.tokenizer.decode(first[: first.index(end)], skip_special_tokens=True).strip()


def test_text_model_rejects_images(llm, photos):
    with pytest.raises(ModelError, match="text-only"):
        llm.generate(Request("What is this?", photos[:1]))


def test_chat_template_errors_are_model_errors(llm_dir, tmp_path):
    folder = with_end_tokens(llm_dir, tmp_path / "no-system", [])
    (folder / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    backend = HFBackend(f"hf:{folder}")
    assert backend.generate(Request("hello", max_tokens=2)).finish_reason == "length"
    with pytest.raises(ModelError, match="System role not supported"):
        backend.generate(Request("hello", system="Be brief.", max_tokens=2))


def test_second_identical_call_is_a_cache_hit(llm, tmp_path):
    model = Model(f"hf:{llm.model_id}", llm, CallCache(tmp_path / "calls.sqlite"))
    first = model.complete("a cat on a sofa", max_tokens=4)
    second = model.complete("a cat on a sofa", max_tokens=4)
    assert (model.stats.calls, model.stats.cache_hits) == (1, 1)
    assert second.cached and (second.text, second.finish_reason) == (first.text, first.finish_reason)


# --- vision-language models ---------------------------------------------------------------------


def test_vlm_takes_one_or_two_images(vlm, photos):
    assert vlm.vision and vlm.kind == "hf"
    one = vlm.generate(Request("Describe the image.", photos[:1], max_tokens=4))
    two = vlm.generate(Request("Is the left one the right one?", tuple(photos[:2]), system="Be brief.", max_tokens=4))
    for reply in (one, two):
        assert isinstance(reply.text, str) and reply.finish_reason == "length"


def test_vlm_batch_matches_single_requests(vlm, photos):
    requests = [
        Request("Describe the image.", photos[:1], max_tokens=5),
        Request("Is there a dog?", (photos[1], photos[2]), max_tokens=5),
        Request("Is there a cat?", photos[2:3], max_tokens=5),
        Request("Answer without an image.", max_tokens=5),  # text-only request to a VLM
    ]
    singles = [vlm.generate(r) for r in requests]
    assert len({s.text for s in singles}) > 1, "tiny model ignores its input; the order check would be void"
    assert vlm.generate_batch(requests) == singles


def test_vlm_prompt_has_one_placeholder_per_image(vlm, photos):
    text = vlm._prompt_text(Request("Compare.", tuple(photos[:2])))
    image_token = vlm.processor.image_token
    assert text.count(image_token) == 2 and text.index(image_token) < text.index("Compare.")


# --- missing weights -----------------------------------------------------------------------------


def test_missing_folder_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match="hf:/path/to/model_folder"):
        HFBackend(f"hf:{tmp_path / 'no-such-model'}")


def test_unknown_repo_offline_is_unavailable():
    with pytest.raises(ModelUnavailable) as caught:
        HFBackend("hf:lensgraph-tests/no-such-model")
    assert "HF_HOME" in str(caught.value) and "hf:/path/to/model_folder" in str(caught.value)


def test_repo_id_loads_from_the_hub_cache_offline(llm_dir, tmp_path):
    """A repo id resolves through HF_HOME's cache with no network, and its commit enters the identity."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-home" / "hub" / "models--lensgraph-tests--tiny-qwen2"
    shutil.copytree(llm_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = (
        "import json; from lensgraph.pipeline.models.backends.hf_local import HFBackend; from lensgraph.pipeline.models.calls import Request\n"
        "b = HFBackend('hf:lensgraph-tests/tiny-qwen2')\n"
        "r = b.generate(Request('a cat on a sofa', max_tokens=3))\n"
        "print(json.dumps([b.identity, r.text, r.finish_reason]))"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    root = Path(__file__).parents[1]
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    identity, text, finish = json.loads(result.stdout.strip().splitlines()[-1])
    assert identity == f"hf|lensgraph-tests/tiny-qwen2|{commit}|float32"
    assert isinstance(text, str) and finish == "length"


def test_folder_without_a_model_says_so(tmp_path):
    with pytest.raises(LensgraphError, match="Could not load"):
        HFBackend(f"hf:{tmp_path}")
