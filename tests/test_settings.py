"""Settings precedence: flags > LENSGRAPH_* environment > lensgraph.toml > defaults."""

from __future__ import annotations

import pytest

from lensgraph.pipeline.errors import LensgraphError
from lensgraph.pipeline.settings import DEFAULT_CLIP, load_settings


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("LENSGRAPH_CONFIG", "LENSGRAPH_INDEX", "LENSGRAPH_TAU", "LENSGRAPH_DB"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_defaults(in_tmp):
    s = load_settings()
    assert s.index == "default" and s.tau == 0.15 and s.clip is None and s.chroma_url is None
    assert DEFAULT_CLIP == "ViT-B-32:laion2b_s34b_b79k"


def test_precedence_flag_over_env_over_toml(in_tmp, monkeypatch):
    (in_tmp / "lensgraph.toml").write_text('index = "from-toml"\ntau = 0.3\nbatch_size = 7\n')
    s = load_settings()
    assert (s.index, s.tau, s.batch_size) == ("from-toml", 0.3, 7)
    monkeypatch.setenv("LENSGRAPH_INDEX", "from-env")
    s = load_settings()
    assert (s.index, s.tau) == ("from-env", 0.3)
    s = load_settings(index="from-flag", tau=None)  # a flag left at None falls through
    assert (s.index, s.tau) == ("from-flag", 0.3)


def test_config_file_from_env(in_tmp, monkeypatch):
    cfg = in_tmp / "elsewhere.toml"
    cfg.write_text('clip = "ViT-L-14:openai"\n')
    monkeypatch.setenv("LENSGRAPH_CONFIG", str(cfg))
    assert load_settings().clip == "ViT-L-14:openai"
    monkeypatch.setenv("LENSGRAPH_CONFIG", str(in_tmp / "missing.toml"))
    with pytest.raises(LensgraphError, match="does not exist"):
        load_settings()


@pytest.mark.parametrize(
    "toml, words",
    [('indx = "typo"\n', "indx"), ("tau = 2.0\n", "tau"), ('index = "a b"\n', "index names"), ("tau = [\n", "Could not read")],
)
def test_bad_settings_are_clear_errors(in_tmp, toml, words):
    (in_tmp / "lensgraph.toml").write_text(toml)
    with pytest.raises(LensgraphError, match=words):
        load_settings()


@pytest.mark.parametrize("models, stages, skipped", [
    ({"llm": "openai:q", "vlm": "caption"}, "verify", ["judge"]),  # a text LLM would judge captions: off
    ({"llm": "openai:q", "vlm": "caption", "stages": "judge"}, "judge", []),  # asked for: on
    ({"llm": "openai:q", "vlm": "caption", "judge": "openai:v"}, "judge", []),  # a judge of its own (a VLM)
    ({"llm": "openai:q", "vlm": "openai:v"}, "judge", []),  # vision mode: the VLM sees the photos
    ({"llm": "openai:q"}, "reason", []),
])
def test_the_judge_runs_by_default_only_where_it_sees_the_images(in_tmp, models, stages, skipped):
    s = load_settings(**models)
    assert s.resolved_stages == stages and list(s.skipped_stages) == skipped
