"""lensgraph as an MCP server, driven by the real MCP client: in process, then over stdio.

The server under test is `lensgraph.adapters.mcp_server.build_server` around real `ImageTools` on the
coco-mini index (captions only, tau = 1, so no CLIP is needed at query time)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from pydantic import SecretStr

from lensgraph.adapters.mcp_server import build_server
from lensgraph.adapters.tools import ImageTools, ToolConfig, ToolError

ROOT = Path(__file__).resolve().parents[1]
PHOTO = "000000000790.jpg"  # a gallery photo
OUTSIDE = "000000000009.jpg"  # in coco-mini/extra: outside the images/ root, not indexed
KEY = "sk-test-SECRET123456"
CREDENTIAL_URL = "http://user:pass@127.0.0.1:9/v1"  # nothing listens on port 9
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"


@pytest.fixture(scope="module")
def settings(coco_searcher):
    return coco_searcher.settings.model_copy(update={"tau": 1.0})


@pytest.fixture(scope="module")
def tools(settings, coco):
    return ImageTools(settings, ToolConfig(roots=(coco / "images",), max_k=20, max_text_chars=200))


def session(server, script):
    """Connect the real client to `server` in process and run `script(client)`."""

    async def main():
        async with Client(server) as client:
            return await script(client)

    return anyio.run(main)


def refused(result, *words: str) -> str:
    """The text of an MCP tool error result (not a crash), checked for `words`."""
    assert result.is_error, result
    assert result.structured_content is None
    text = result.content[0].text
    for word in words:
        assert word.lower() in text.lower(), text
    return text


def refused_as(result, tools: ImageTools, tool: str, arguments: dict) -> None:
    """The mapping of a refusal: the ToolError that `tools` raises for the same call arrives as an
    MCP error result carrying its message. (The wording itself is tested once, where ImageTools
    raises it: tests/test_agent.py.)"""
    with pytest.raises(ToolError) as raised:
        getattr(tools, tool)(**arguments)
    text = refused(result)
    assert text.endswith(str(raised.value)), (text, str(raised.value))


def data_url(path: Path, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def test_tools_are_listed_with_schemas_and_index_images_only_when_enabled(tools, settings, coco):
    async def listing(client):
        return {t.name: t for t in (await client.list_tools()).tools}

    listed = session(build_server(tools), listing)
    assert set(listed) == {"search_images", "describe_image", "index_info"}
    search = listed["search_images"]
    props = search.input_schema["properties"]
    assert search.input_schema["required"] == ["query"]
    assert props["k"]["maximum"] == 20 and props["k"]["default"] == 10 and props["query"]["maxLength"] == 200
    assert all(p.get("description") for p in props.values()) and "reference" in search.description
    assert search.output_schema["properties"]["results"]["type"] == "array"
    assert search.annotations.read_only_hint is True
    assert all(t.description and t.output_schema for t in listed.values())

    enabled = ImageTools(settings, ToolConfig(roots=(coco / "images",), allow_indexing=True))
    listed = session(build_server(enabled), listing)
    assert "index_images" in listed and listed["index_images"].annotations.read_only_hint is False


def test_search_describe_and_info_return_structured_results(tools, coco, coco_searcher):
    reference = coco / "images" / PHOTO

    async def script(client):
        text = await client.call_tool("search_images", {"query": "two horses on a beach", "k": 5})
        composed = await client.call_tool("search_images", {"query": "with a dog", "reference_image": str(reference), "k": 20})
        inline = await client.call_tool("search_images", {"query": "with a dog", "reference_image": data_url(reference), "k": 20})
        described = await client.call_tool("describe_image", {"image": str(reference)})
        info = await client.call_tool("index_info", {})
        return text, composed, inline, described, info

    text, composed, inline, described, info = session(build_server(tools), script)

    assert not text.is_error
    found = text.structured_content
    assert found["query"] == "two horses on a beach" and found["stages"] == ["caption", "retrieve"]
    assert [r["rank"] for r in found["results"]] == [1, 2, 3, 4, 5]
    assert all(set(r) == {"rank", "id", "path", "score", "caption", "relevance", "evidence"} for r in found["results"])
    top = found["results"][0]
    assert "horse" in top["caption"].lower()
    assert not Path(top["path"]).is_absolute() and (coco / "images" / top["path"]).is_file()  # relative to the root
    assert top["score"] >= found["results"][-1]["score"]
    assert text.content[0].text.startswith("5 result(s)") and top["path"] in text.content[0].text
    # the top three as thumbnails beside the structured result: real JPEGs of the same photos, small
    thumbs = [c for c in text.content if c.type == "image"]
    assert len(thumbs) == 3 and all(c.mime_type == "image/jpeg" for c in thumbs)
    from PIL import Image

    for hit, thumb in zip(found["results"], thumbs):
        with Image.open(io.BytesIO(base64.b64decode(thumb.data))) as small, Image.open(coco / "images" / hit["path"]) as big:
            assert max(small.size) == 256 and abs(small.size[0] / small.size[1] - big.size[0] / big.size[1]) < 0.02

    ref_id = described.structured_content["id"]
    stored = coco_searcher.index.metadata([ref_id])[ref_id]["caption"]
    assert described.structured_content == {"id": ref_id, "caption": stored, "source": "index"}
    assert described.content[0].text == stored
    for result in (composed, inline):  # a path or the same bytes as a data URL: the reference is excluded
        assert not result.is_error and len(result.structured_content["results"]) == 20
        assert ref_id not in [r["id"] for r in result.structured_content["results"]]
        assert result.structured_content["reference_caption"] == stored

    assert info.structured_content == {
        "name": coco_searcher.settings.index, "images": coco_searcher.index.count(), "captions": 159,
        "clip": "ViT-B-32:none", "caption_encoder": "st:all-MiniLM-L6-v2", "stages": "retrieve",
        "indexing_enabled": False,
    }


def test_refusals_are_error_results_and_the_server_keeps_answering(tools, settings, coco, tmp_path):
    images, extra = coco / "images", coco / "extra"
    garbage = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    refusals = {  # hostile or mistaken calls that ImageTools refuses
        "traversal": ("search_images", {"query": "a dog", "reference_image": f"{images}/../extra/{OUTSIDE}"}),
        "traversal describe": ("describe_image", {"image": f"{images}/../extra/{OUTSIDE}"}),
        "absolute outside": ("describe_image", {"image": "/etc/hostname"}),
        "missing": ("describe_image", {"image": str(images / "no-such-photo.jpg")}),
        "folder": ("describe_image", {"image": str(images)}),
        "not base64": ("search_images", {"query": "a dog", "reference_image": "data:image/png;base64,@@@"}),
        "not base64 url": ("describe_image", {"image": "data:image/png,rawbytes"}),
        "not an image": ("search_images", {"query": "a dog", "reference_image": garbage}),
        "k zero": ("search_images", {"query": "a dog", "k": 0}),
        "k too big": ("search_images", {"query": "a dog", "k": 21}),
        "long query": ("search_images", {"query": "a dog " * 40}),
        "empty query": ("search_images", {"query": "   "}),
    }

    async def script(client):
        results = {name: await client.call_tool(tool, args) for name, (tool, args) in refusals.items()}
        results["indexing off"] = await client.call_tool("index_images", {"folder": str(images)})
        results["after"] = await client.call_tool("search_images", {"query": "a dog", "k": 2})
        return results

    r = session(build_server(tools), script)
    for name, (tool, args) in refusals.items():
        refused_as(r[name], tools, tool, args)
    refused(r["indexing off"], "unknown tool")  # not even listed: the tool is not registered
    assert not r["after"].is_error and len(r["after"].structured_content["results"]) == 2

    # size cap on inline images
    small = ImageTools(settings, ToolConfig(roots=(images,), max_image_bytes=1000))
    big = data_url(images / PHOTO)
    oversized = [("search_images", {"query": "a dog", "reference_image": big}), ("describe_image", {"image": big}),
                 ("describe_image", {"image": str(images / PHOTO)})]

    async def calls(client, listed):
        return [await client.call_tool(tool, args) for tool, args in listed]

    for result, (tool, args) in zip(session(build_server(small), lambda client: calls(client, oversized)), oversized):
        refused_as(result, small, tool, args)

    # a symlink inside the root that points outside it; a real file beside it is fine
    (tmp_path / "escape.jpg").symlink_to(extra / OUTSIDE)
    (tmp_path / "escape-dir").symlink_to(extra, target_is_directory=True)
    shutil.copy(images / PHOTO, tmp_path / "copy.jpg")
    linked = ImageTools(settings, ToolConfig(roots=(tmp_path,), allow_indexing=True))
    escapes = [("describe_image", {"image": str(tmp_path / "escape.jpg")}),
               ("search_images", {"query": "a dog", "reference_image": str(tmp_path / "escape.jpg")}),
               ("describe_image", {"image": str(tmp_path / "escape-dir" / OUTSIDE)}),
               ("index_images", {"folder": str(tmp_path / "escape-dir")}),
               ("index_images", {"folder": str(tmp_path / "..")}),
               ("describe_image", {"image": str(tmp_path / "copy.jpg")})]

    *refusals_through_links, copy = session(build_server(linked), lambda client: calls(client, escapes))
    for result, (tool, args) in zip(refusals_through_links, escapes):
        refused_as(result, linked, tool, args)
    assert not copy.is_error and copy.structured_content["source"] == "index"


def test_arguments_of_a_wrong_type_are_refused_naming_the_argument_and_what_it_must_be(tools):
    """Strict types (k "3" was searched as 3, k true as 1, threshold "0.5" as 0.5), and the answer is
    ours: the argument and what it must be, not pydantic's report with its web link."""
    wrong = [
        ("search_images", {"query": "a dog", "k": "3"}, "k must be a whole number from 1 to 20, not a string."),
        ("search_images", {"query": "a dog", "k": True}, "k must be a whole number from 1 to 20, not true."),
        ("search_images", {"query": "a dog", "k": "many"}, "k must be a whole number from 1 to 20, not a string."),
        ("search_images", {"query": "a dog", "k": 2.5}, "k must be a whole number from 1 to 20, not 2.5."),
        ("search_images", {"query": "a dog", "threshold": "0.5"},
         "threshold must be a number from 0 to 1 or null, not a string."),
        ("search_images", {"query": "a dog", "threshold": True}, "threshold must be a number from 0 to 1 or null, not true."),
        ("search_images", {"query": ["a dog"]}, "query must be a string, not a list."),
        ("search_images", {"query": "a dog", "reference_image": 7}, "reference_image must be a string or null, not 7."),
        ("search_images", {"k": "3"}, "query is required (a string); k must be a whole number from 1 to 20, not a string."),
        ("describe_image", {"image": None}, "image must be a string, not null."),
    ]

    async def script(client):
        refusals = [await client.call_tool(tool, args) for tool, args, _ in wrong]
        return refusals, await client.call_tool("search_images", {"query": "a dog", "k": 2.0})

    refusals, whole = session(build_server(tools), script)
    for result, (tool, args, message) in zip(refusals, wrong):
        text = refused(result)
        assert text == f"Invalid arguments for {tool}: {message}", (args, text)
        assert "pydantic" not in text and "http" not in text
    assert not whole.is_error and len(whole.structured_content["results"]) == 2  # 2.0 is an integer in JSON Schema


def test_index_images_when_enabled(settings, coco, coco_searcher):
    images = coco / "images"
    enabled = ImageTools(settings, ToolConfig(roots=(images,), allow_indexing=True))

    async def script(client):
        return [await client.call_tool("index_images", {"folder": str(coco / "extra")}),
                await client.call_tool("index_images", {"folder": f"{images}/../extra"}),
                await client.call_tool("index_images", {"folder": str(images / "nope")}),
                await client.call_tool("index_images", {"folder": str(images)})]

    outside, traversal, missing, again = session(build_server(enabled), script)
    refused_as(outside, enabled, "index_images", {"folder": str(coco / "extra")})
    refused_as(traversal, enabled, "index_images", {"folder": f"{images}/../extra"})
    refused_as(missing, enabled, "index_images", {"folder": str(images / "nope")})
    assert not again.is_error  # every photo is indexed already: nothing changes
    assert again.structured_content == {"added": 0, "unchanged": 159, "skipped": [], "images": coco_searcher.index.count()}


def test_index_images_does_not_follow_file_links_out_of_the_roots(coco, tmp_path):
    from lensgraph.pipeline.store.index import GalleryIndex
    from lensgraph.pipeline.settings import load_settings

    settings = load_settings(db=tmp_path / "db", clip="ViT-B-32:none", tau=1.0)
    GalleryIndex.create_or_open(settings, "ViT-B-32:none", 512)  # an empty index of its own
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(coco / "images" / PHOTO, root / "inside.jpg")
    (root / "escape.jpg").symlink_to(coco / "extra" / OUTSIDE)
    tools = ImageTools(settings, ToolConfig(roots=(root,), allow_indexing=True))

    async def script(client):
        return await client.call_tool("index_images", {"folder": str(root)})

    report = session(build_server(tools), script)
    assert not report.is_error
    assert report.structured_content["added"] == 1 and report.structured_content["images"] == 1
    assert [s["file"] for s in report.structured_content["skipped"]] == ["escape.jpg"]


def test_no_secrets_in_results_or_errors(coco_searcher, coco, tmp_path):
    settings = coco_searcher.settings.model_copy(update={
        "tau": 1.0, "openai_api_key": SecretStr(KEY), "llm": "openai:x", "llm_base_url": CREDENTIAL_URL,
        "vlm": "openai:x", "vlm_base_url": CREDENTIAL_URL, "stages": "reason", "retries": 0, "timeout": 2.0,
        "no_cache": True,
    })
    shutil.copy(coco / "extra" / OUTSIDE, tmp_path / "new.jpg")  # not indexed: needs the (dead) captioner
    tools = ImageTools(settings, ToolConfig(roots=(coco / "images", tmp_path)))

    async def script(client):
        return [await client.call_tool("search_images", {"query": "a dog on a beach", "k": 3}),
                await client.call_tool("search_images", {"query": "at night", "reference_image": str(tmp_path / "new.jpg"), "k": 3}),
                await client.call_tool("describe_image", {"image": str(tmp_path / "new.jpg")}),
                await client.call_tool("index_info", {})]

    text, composed, described, info = session(build_server(tools), script)
    assert not text.is_error and text.structured_content["stages"] == ["caption", "reason", "retrieve"]
    assert any("reason" in w for w in text.structured_content["warnings"])  # the LLM was tried, and failed
    assert not composed.is_error and any("caption" in w for w in composed.structured_content["warnings"])
    refused(described, "openai:x")  # the captioner's failure, reported
    assert not info.is_error
    for result in (text, composed, described, info):
        shown = result.model_dump_json()
        assert "SECRET123456" not in shown and "pass@" not in shown and "user:" not in shown


class Broken(ImageTools):
    """A collaborator that fails the way a bug would, with secrets in its message."""

    def index_info(self):
        raise RuntimeError(f"store at {CREDENTIAL_URL} said no to {KEY}")


def test_an_unexpected_failure_is_an_error_result_with_the_message_redacted(settings, coco):
    broken = Broken(settings.model_copy(update={"openai_api_key": SecretStr(KEY)}), ToolConfig(roots=(coco / "images",)))

    async def script(client):
        return [await client.call_tool("index_info", {}), await client.call_tool("describe_image", {"image": str(coco / "images" / PHOTO)})]

    failed, still = session(build_server(broken), script)
    text = refused(failed, "internal error", "RuntimeError", "said no to")
    assert "SECRET123456" not in text and "pass@" not in text
    assert not still.is_error


def test_stdio_subprocess_speaks_only_protocol_on_stdout(tools, coco_searcher, coco, tmp_path, caplog):
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "run.py"), "mcp", "--db", str(coco_searcher.settings.db), "--index", coco_searcher.settings.index,
              "--root", str(coco / "images"), "--tau", "1", "--max-k", "20"],
        env=dict(os.environ),  # HF_HUB_OFFLINE and the like, as the tests run
        cwd=str(ROOT),
    )
    stray: list[Exception] = []

    async def on_message(message):
        if isinstance(message, Exception):  # a stdout line that is not JSON-RPC
            stray.append(message)

    async def main():
        with open(tmp_path / "stderr.txt", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, message_handler=on_message, read_timeout_seconds=120) as client:
                    init = await client.initialize()
                    listed = await client.list_tools()
                    found = await client.call_tool("search_images", {"query": "two horses on a beach", "k": 3})
                    bad = await client.call_tool("search_images", {"query": "x", "reference_image": f"{coco}/images/../extra/{OUTSIDE}"})
                    again = await client.call_tool("index_info", {})
                    return init, listed, found, bad, again

    init, listed, found, bad, again = anyio.run(main)
    assert init.server_info.name == "lensgraph" and init.instructions
    assert {t.name for t in listed.tools} == {"search_images", "describe_image", "index_info"}
    assert not found.is_error
    results = found.structured_content["results"]
    assert [r["rank"] for r in results] == [1, 2, 3] and "horse" in results[0]["caption"].lower()
    refused_as(bad, tools, "search_images", {"query": "x", "reference_image": f"{coco}/images/../extra/{OUTSIDE}"})
    assert not again.is_error and again.structured_content["images"] == coco_searcher.index.count()
    assert stray == [] and "Failed to parse" not in caplog.text
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr, stderr


def test_results_never_show_a_path_outside_the_roots(settings, tools, coco, tmp_path):
    elsewhere = ImageTools(settings, ToolConfig(roots=(tmp_path,)))  # the indexed photos lie outside this root

    async def outside(client):
        return await client.call_tool("search_images", {"query": "two horses on a beach", "k": 3})

    found = session(build_server(elsewhere), outside)
    assert not found.is_error and all(r["path"] is None for r in found.structured_content["results"])
    assert str(coco) not in found.model_dump_json() and str(tmp_path) not in found.model_dump_json()
    assert found.structured_content["results"][0]["id"] in found.content[0].text  # named by id instead
    assert [c.type for c in found.content] == ["text"]  # and no thumbnail of a file outside the roots
    with pytest.raises(Exception, match="under the allowed folders"):
        elsewhere.thumbnail(found.structured_content["results"][0]["id"])

    async def inside(client):
        top = (await client.call_tool("search_images", {"query": "two horses on a beach", "k": 3})).structured_content["results"][0]
        again = await client.call_tool("search_images", {"query": "with a dog", "reference_image": top["path"], "k": 3})
        described = await client.call_tool("describe_image", {"image": top["path"]})
        return top, again, described

    top, again, described = session(build_server(tools), inside)
    assert not Path(top["path"]).is_absolute() and str(coco) not in again.model_dump_json()
    assert not again.is_error and top["id"] not in [r["id"] for r in again.structured_content["results"]]
    assert not described.is_error and described.structured_content["id"] == top["id"]  # the relative name leads back


def test_an_unexpected_searcher_failure_is_a_redacted_error_result(tools, monkeypatch, caplog):
    monkeypatch.setattr(tools, "settings", tools.settings.model_copy(update={"openai_api_key": SecretStr("plainsecretvalue42")}))

    def boom(*args, **kwargs):
        raise RuntimeError(f"boom {KEY} via redis://bob:p@ss@cache/0 with plainsecretvalue42 and {HF_TOKEN}")

    monkeypatch.setattr(tools.searcher, "results_of", boom)

    async def script(client):
        return [await client.call_tool("search_images", {"query": "a dog", "k": 2}),
                await client.call_tool("index_info", {})]

    failed, still = session(build_server(tools), script)
    text = refused(failed, "internal error (RuntimeError", "boom", "try again")
    for leak in ("SECRET123456", "p@ss", "ss@cache", "bob:", "plainsecretvalue42", HF_TOKEN, "Traceback"):
        assert leak not in failed.model_dump_json(), text
    assert not still.is_error
    assert "search_images failed" in caplog.text and "Traceback" in caplog.text  # the operator's log has it all...
    for leak in ("SECRET123456", "ss@cache", "plainsecretvalue42", HF_TOKEN):  # ...but the secrets
        assert leak not in caplog.text
