"""The main paths on the twelve CC BY photos shipped in tests/fixtures/photos, so a clone with nothing
beside it runs them on real photos: index, caption search, the graph with a model, eval and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MINILM, RANDOM_CLIP, run_main
from fakes import ScriptedBackend, context
from lensgraph.pipeline.models.calls import Model

PHOTOS = Path(__file__).parent / "fixtures" / "photos"
CAPTIONS = {c["id"]: c["caption"] for c in map(json.loads, (PHOTOS / "captions.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def photo_searcher(tmp_path_factory, clip, minilm):
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.pipeline.settings import load_settings

    settings = load_settings(db=tmp_path_factory.mktemp("photos-db"), clip=RANDOM_CLIP, text_encoder=MINILM, tau=1.0)
    searcher = Searcher.open(settings, create=True)
    searcher.__dict__["clip"] = clip
    searcher.__dict__["text_encoder"] = minilm
    searcher.first_report = searcher.add_folder(PHOTOS, captions=PHOTOS / "captions.jsonl")
    return searcher


def test_index_and_search_by_caption(photo_searcher):
    assert photo_searcher.index.count() == 12 and photo_searcher.index.caption_count() == 12
    # MiniLM is real: a paraphrase of a caption finds its photo first in the caption channel
    for query, stem in [("two people riding horses along a beach", "000000214753"),
                        ("a dog tied up next to a hydrant", "000000377575"),
                        ("a microwave in a kitchen", "000000408805")]:
        hits = photo_searcher.search_texts([query], k=3)
        assert Path(hits[0].path).stem == stem, (query, [Path(h.path).stem for h in hits])


def test_graph_on_real_photos_with_a_model(photo_searcher):
    """The composed graph, caption mode: a scripted planner; the caption matcher verifies against the
    stored captions, so the photo whose caption has the planned object rises."""
    from lensgraph.graphs.runner import open_context, run_query

    plan = {"edits": [{"type": "addition", "text": "horses"}],
            "descriptions": ["horses on a beach", "two riders on horses at the sea", "a beach"],
            "questions": [{"question": "Are there horses?", "expected": "yes"}]}
    settings = photo_searcher.settings.model_copy(update={"llm": "openai:x", "llm_base_url": "http://127.0.0.1:9/v1",
                                                          "vlm": "caption", "k": 6, "stages": "verify", "no_cache": True})
    ctx = open_context(settings, photo_searcher)
    ctx.models.llm = Model("scripted", ScriptedBackend(lambda r: json.dumps(plan)))
    state = run_query(ctx, "with horses", str(PHOTOS / "000000126107.jpg"))
    assert [t["stage"] for t in state["trace"]] == ["caption", "reason", "retrieve", "verify"]
    assert state["caption"] == CAPTIONS["000000126107"]  # the stored caption, no captioning call
    top = Path(next(c["path"] for c in state["candidates"])).stem
    assert top == "000000214753"
    assert "000000126107" not in [Path(c["path"]).stem for c in state["candidates"]]  # the reference is removed


def test_eval_and_resume_on_a_small_cir_set(photo_searcher, tmp_path, capsys):
    queries = [
        {"id": 0, "reference_img_id": 126107, "relative_caption": "with horses and riders instead",
         "shared_concept": "", "target_img_id": 214753, "gt_img_ids": [214753]},
        {"id": 1, "reference_img_id": 790, "relative_caption": "a dog tied to a hydrant instead of the family",
         "shared_concept": "", "target_img_id": 377575, "gt_img_ids": [377575]},
    ]
    (tmp_path / "cir.json").write_text(json.dumps(queries))
    args = ["eval", "--dataset", "circo", "--annotations", str(tmp_path / "cir.json"), "--images", str(PHOTOS),
            "--captions", str(PHOTOS / "captions.jsonl"), "--mode", "caption", "--stages", "retrieve",
            "--drop-reference", "--db", str(photo_searcher.settings.db), "--index", photo_searcher.settings.index,
            "--clip", RANDOM_CLIP, "--text-encoder", MINILM, "--out", str(tmp_path / "run"), "--json"]
    code, out, err = run_main(capsys, *args)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["queries"] == 2 and summary["metrics"]["retrieve"]["n"] == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["reference"] == "removed" and run["captions"]["file"].endswith("captions.jsonl")
    code, again, err = run_main(capsys, *args)  # resumes: both queries are done, the same numbers
    assert code == 0 and json.loads(again)["metrics"] == summary["metrics"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2  # one entry per session of the run
    code, _, err = run_main(capsys, *[a if a != "--drop-reference" else "--keep-reference" for a in args])
    assert code != 0 and "reference" in err  # a different reference policy is a different run


def test_moved_truncated_and_changed_files_cost_their_candidates_not_the_query(tmp_path, clip, minilm):
    """Vision-model verification and judging over files that changed after indexing: each bad file
    is a warning and a missing verdict; the query finishes, ranked."""
    import shutil


    from lensgraph.graphs.runner import run_query
    from lensgraph.pipeline.models.backends import Models
    from lensgraph.pipeline.models.prompts import load_prompt_set
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.pipeline.settings import load_settings

    folder = tmp_path / "photos"
    shutil.copytree(PHOTOS, folder)
    searcher = Searcher.open(load_settings(db=tmp_path / "db", clip=RANDOM_CLIP, text_encoder=MINILM, tau=1.0), create=True)
    searcher.__dict__["clip"], searcher.__dict__["text_encoder"] = clip, minilm
    searcher.add_folder(folder, captions=folder / "captions.jsonl")
    seen: list[int] = []

    def vlm(request) -> str:  # a vision model: it answers from the pixels it was sent
        seen.append(len(request.images))
        return "Yes"

    model = Model("vlm", ScriptedBackend(vlm))
    plan = json.dumps({"edits": [{"type": "addition", "text": "a horse"}], "descriptions": ["horses", "a horse", "riders"],
                       "questions": [{"question": "Is there a horse?", "expected": "yes"}]})
    ctx = context(searcher, Models(Model("llm", ScriptedBackend(lambda r: plan)), model, model, model),
                  load_prompt_set(), k=6, alpha=3, tau=1.0, stages="judge", max_concurrency=1, verifier="model", judge_mode="pairwise")
    top = [Path(h.path) for h in searcher.search_texts(["horses", "a horse", "riders", "with a horse"], k=6)]
    top[0].unlink()                                         # moved away
    top[1].write_bytes(top[1].read_bytes()[:300])           # truncated mid-copy
    other = next(p for p in sorted(folder.glob("*.jpg")) if p not in top[:3])
    shutil.copyfile(other, top[2])                          # other pixels under the same name
    state = run_query(ctx, "with a horse", str(folder / "000000126107.jpg"))
    warnings = " ".join(w for t in state["trace"] for w in t["warnings"])
    assert top[0].name in warnings and top[1].name in warnings and "changed since it was indexed" in warnings
    verify = next(t for t in state["trace"] if t["stage"] == "verify")
    assert verify["failures"] >= 3 and len(state["rankings"]["verify"]) >= 6
    assert state["rankings"].get("judge")  # the judge ran on what it could read
    # a reference that vanished: the query runs on the instruction alone, and says so
    gone = run_query(ctx, "with a horse", str(tmp_path / "nowhere.jpg"))
    assert gone["rankings"]["retrieve"] and "cannot read the reference" in gone["trace"][0]["warnings"][0]


def test_vision_mode_end_to_end_with_a_tiny_transformers_vlm(tmp_path, clip, minilm):
    """The path a user with a local VLM takes: the reference captioned by the VLM (the index has no
    captions), questions answered and candidates judged from the pixels, through the real
    transformers backend (a tiny random-weight Idefics3: its words are noise, its plumbing is real)."""
    import shutil

    from lensgraph.graphs.runner import open_context, run_query
    from lensgraph.adapters.searcher import Searcher
    from lensgraph.pipeline.settings import load_settings
    from tiny_hf_models import build_idefics3

    vlm = build_idefics3(tmp_path / "tiny-idefics3")
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(PHOTOS.glob("*.jpg"))[:6]:
        shutil.copyfile(p, folder / p.name)
    settings = load_settings(db=tmp_path / "db", clip=RANDOM_CLIP, text_encoder=MINILM, vlm=f"hf:{vlm}", llm=f"hf:{vlm}",
                             k=3, alpha=2, tau=0.0, stages="judge", judge_mode="pairwise", no_cache=True)
    searcher = Searcher.open(settings, create=True)
    searcher.__dict__["clip"], searcher.__dict__["text_encoder"] = clip, minilm
    searcher.add_folder(folder)
    ctx = open_context(settings, searcher)
    plan = json.dumps({"edits": [{"type": "addition", "text": "a dog"}], "descriptions": ["a dog", "a dog outside", "dog"],
                       "questions": [{"question": "Is there a dog?", "expected": "yes"}]})
    ctx.models.llm = Model("scripted", ScriptedBackend(lambda r: plan))
    reference = sorted(folder.glob("*.jpg"))[0]
    state = run_query(ctx, "with a dog", str(reference))
    trace = {t["stage"]: t for t in state["trace"]}
    assert list(trace) == ["caption", "reason", "retrieve", "verify", "judge"]
    assert trace["caption"]["source"] == f"hf:{vlm}" and trace["caption"]["calls"] == 1
    assert trace["verify"]["calls"] == 3 and trace["judge"]["calls"] == 2  # k x 1 question, alpha pairs
    assert set(state["answers"]) == set(state["rankings"]["retrieve"][:3])
    assert all(v["reply"] is not None for v in state["verdicts"].values())
    assert reference.name not in [Path(c["path"]).name for c in state["candidates"]]


def test_streamed_stages_end_in_the_state_a_plain_run_returns(photo_searcher):
    from lensgraph.graphs.runner import open_context, run_query, stream_query

    settings = photo_searcher.settings.model_copy(update={"k": 5})
    ctx = open_context(settings, photo_searcher)
    ref = str(PHOTOS / "000000126107.jpg")
    streamed = list(stream_query(ctx, "with horses", ref))
    assert [stage for stage, _, _ in streamed] == ["caption", "retrieve"]
    assert streamed[0][2]["caption"] and not streamed[0][2].get("rankings")  # the state after each stage
    final = streamed[-1][2]
    plain = run_query(ctx, "with horses", ref)
    assert final["rankings"] == plain["rankings"] and final["caption"] == plain["caption"]
    assert [t["stage"] for t in final["trace"]] == [t["stage"] for t in plain["trace"]]
