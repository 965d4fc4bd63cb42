"""LangChain's own standard tool suites (langchain-tests) run on lensgraph's search_images tool.

The unit suite needs no index (ImageTools opens its searcher on first use, and these tests never
call the tool). The integration suite invokes the tool, sync and async, with and without a
ToolCall, on a real index of the twelve photos in tests/fixtures/photos: random-weight CLIP, the
real MiniLM caption encoder (the session's, loaded once), retrieval only, no LLM; a few seconds
beyond the encoders, so it stays in the normal run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool

from lensgraph.adapters.agent import langchain_tool
from lensgraph.adapters.tools import ImageTools, ToolConfig
from conftest import MINILM, RANDOM_CLIP
from lensgraph.pipeline.settings import load_settings

try:
    from langchain_tests.integration_tests import ToolsIntegrationTests
    from langchain_tests.unit_tests import ToolsUnitTests
except ImportError:  # a venv from before it joined the dev extras: skip, saying why; CI must not skip
    if os.environ.get("CI"):
        raise
    pytest.skip("needs langchain-tests (pip install langchain-tests)", allow_module_level=True)

PHOTOS = Path(__file__).parent / "fixtures" / "photos"
EXAMPLE = {"query": "two people riding horses along a beach", "k": 3}


class TestSearchImagesToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> BaseTool:
        settings = load_settings(db=PHOTOS / "no-index-here", clip=RANDOM_CLIP, text_encoder=MINILM)
        return langchain_tool(ImageTools(settings, ToolConfig(roots=(PHOTOS,))))

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return EXAMPLE


class TestSearchImagesToolIntegration(ToolsIntegrationTests):
    # The suite's async tests are bare `async def`: LangChain runs pytest-asyncio in auto mode, our
    # config leaves it strict, so the class carries the mark (the sync tests ignore it, and
    # pytest-asyncio's warning that they need none is silenced).
    pytestmark = [pytest.mark.asyncio,
                  pytest.mark.filterwarnings("ignore:.*is marked with '@pytest.mark.asyncio':pytest.PytestWarning")]
    image_tools: ImageTools

    @pytest.fixture(scope="class", autouse=True)
    def photo_tools(self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    clip: Any, minilm: Any) -> None:
        """ImageTools on a real index of the bundled photos, retrieval only, set on the class for
        `tool_constructor` (a property, which cannot take fixtures)."""
        from lensgraph.adapters.searcher import Searcher
        from lensgraph.pipeline.store.index import GalleryIndex

        settings = load_settings(db=tmp_path_factory.mktemp("standard-db"), clip=RANDOM_CLIP, text_encoder=MINILM,
                                 tau=1.0, stages="retrieve")
        searcher = Searcher(settings, GalleryIndex.create_or_open(settings, RANDOM_CLIP, clip.dim))  # CLIP built once
        searcher.__dict__["clip"], searcher.__dict__["text_encoder"] = clip, minilm
        searcher.add_folder(PHOTOS, captions=PHOTOS / "captions.jsonl")
        tools = ImageTools(settings, ToolConfig(roots=(PHOTOS,)))
        tools._searcher = searcher  # the index already open, encoders loaded
        request.cls.image_tools = tools

    @property
    def tool_constructor(self) -> BaseTool:
        return langchain_tool(self.image_tools)

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return EXAMPLE
