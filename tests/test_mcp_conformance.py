"""`lensgraph mcp` checked from outside, over stdio, by two independent official clients:
- the MCP Inspector's CLI mode (Node, the TypeScript SDK, which itself checks each structuredContent
  against the tool's outputSchema): lists the tools and calls each one, and we read the JSON it prints;
- the Python SDK's ClientSession: every inputSchema and outputSchema is a valid JSON Schema, every
  structured result validates against its outputSchema, and arguments of a wrong type are answered as
  tool errors (isError), never a crash or a hang.
The server runs on a real index of the twelve photos in tests/fixtures/photos (random-weight CLIP,
the real MiniLM caption encoder, tau 1: retrieval only, no LLM).

The Inspector is an npm package: CI installs it with
`npm install --prefix .ci/node @modelcontextprotocol/inspector@0.15.0`; elsewhere set
LENSGRAPH_MCP_INSPECTOR to its `mcp-inspector` binary.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import validator_for
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from lensgraph.adapters.tools import ImageTools, ToolConfig, ToolError
from local_servers import missing

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(__file__).parent / "fixtures" / "photos"
CAPTIONS = {c["id"]: c["caption"] for c in map(json.loads, (PHOTOS / "captions.jsonl").read_text().splitlines())}
HORSES = "000000214753.jpg"  # "Two equestrians riding their horses on the beach together."
BIRD = "000000126107.jpg"  # "A bird that is flying over the sand."
TOOLS = {"search_images", "describe_image", "index_images", "index_info"}
CALL_TIMEOUT = 120  # seconds for one call: the first one loads the caption encoder


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, clip, minilm) -> tuple[Path, Path, str]:
    """(root, db, index name): the photos copied into a root of their own, indexed with their captions."""
    from lensgraph.adapters.searcher import Searcher
    from conftest import MINILM, RANDOM_CLIP
    from lensgraph.pipeline.settings import load_settings

    base = tmp_path_factory.mktemp("mcp-conformance")
    root = base / "photos"
    shutil.copytree(PHOTOS, root)
    settings = load_settings(db=base / "db", clip=RANDOM_CLIP, text_encoder=MINILM, tau=1.0)
    searcher = Searcher.open(settings, create=True)
    searcher.__dict__["clip"], searcher.__dict__["text_encoder"] = clip, minilm  # built once per session
    searcher.add_folder(root, captions=root / "captions.jsonl")
    return root, settings.db, settings.index


def server_command(gallery: tuple[Path, Path, str]) -> list[str]:
    """`lensgraph mcp` as an MCP host launches it (the console script; run.py where it is not installed)."""
    root, db, index = gallery
    script = Path(sys.executable).with_name("lensgraph")
    launcher = [str(script)] if script.is_file() else [sys.executable, str(ROOT / "run.py")]
    return [*launcher, "mcp", "--db", str(db), "--index", index, "--root", str(root), "--tau", "1",
            "--max-k", "20", "--allow-indexing"]


@pytest.fixture(scope="session")  # session scope: checked before the module's index is built
def inspector() -> Path:
    """The Inspector's binary, or a skip (a failure under CI) saying how to install it."""
    binary = Path(os.environ.get("LENSGRAPH_MCP_INSPECTOR") or ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcp-inspector")
    if not binary.is_file():
        missing(f"needs the MCP Inspector at {binary}: npm install --prefix .ci/node "
                "@modelcontextprotocol/inspector@0.15.0, or set LENSGRAPH_MCP_INSPECTOR")
    if shutil.which("node") is None:
        missing("needs Node.js (node) for the MCP Inspector")
    return binary


def run_inspector(inspector: Path, server: list[str], *method: str) -> dict[str, Any]:
    """Run the Inspector's CLI once (it starts the server, makes one request, prints the result as
    JSON) and return what it printed. A hang is killed with its whole process group: the Inspector,
    its Node client and the server."""
    with subprocess.Popen([str(inspector), "--cli", *server, *method], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=4 * CALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"the Inspector did not answer {method} within {4 * CALL_TIMEOUT} s")
    assert proc.returncode == 0, err  # the client also fails when structuredContent breaks outputSchema
    return json.loads(out)


def validates(instance: Any, schema: dict[str, Any]) -> bool:
    try:
        Draft202012Validator(schema).validate(instance)
        return True
    except ValidationError:
        return False


@pytest.mark.slow
def test_the_inspector_lists_the_tools_and_calls_each_one(inspector, gallery):
    server = server_command(gallery)

    listed = {t["name"]: t for t in run_inspector(inspector, server, "--method", "tools/list")["tools"]}
    assert set(listed) == TOOLS
    assert all(t["description"] and t["inputSchema"]["type"] == "object" and t["outputSchema"]["type"] == "object"
               for t in listed.values())
    assert listed["search_images"]["inputSchema"]["properties"]["k"]["maximum"] == 20

    def call(tool: str, **arguments: str) -> dict[str, Any]:
        args = [a for key, value in arguments.items() for a in ("--tool-arg", f"{key}={value}")]
        return run_inspector(inspector, server, "--method", "tools/call", "--tool-name", tool, *args)

    found = call("search_images", query="two people riding horses along a beach", k="3")  # the CLI sends k as a number
    described = call("describe_image", image=HORSES)  # a path as results name it: relative to the root
    info = call("index_info")
    indexed = call("index_images", folder=".")
    wrong = call("search_images", query="a dog", k="many")  # the CLI turns "many" into NaN, sent as null

    for result, tool in ((found, "search_images"), (described, "describe_image"), (info, "index_info"),
                         (indexed, "index_images")):
        assert result["isError"] is False and validates(result["structuredContent"], listed[tool]["outputSchema"])
    hits = found["structuredContent"]["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["path"] == HORSES
    assert [c["type"] for c in found["content"]] == ["text", "image", "image", "image"]
    assert all(c["mimeType"] == "image/jpeg" and base64.b64decode(c["data"]) for c in found["content"][1:])
    assert described["structuredContent"]["caption"] == CAPTIONS[Path(HORSES).stem]
    assert described["structuredContent"]["source"] == "index"
    assert info["structuredContent"] | {"name": None} == {
        "name": None, "images": 12, "captions": 12, "clip": "ViT-B-32:none", "caption_encoder": "st:all-MiniLM-L6-v2",
        "stages": "retrieve", "indexing_enabled": True}
    assert indexed["structuredContent"] == {"added": 0, "unchanged": 12, "skipped": [], "images": 12}
    assert wrong["isError"] is True and "structuredContent" not in wrong
    assert wrong["content"][0]["text"] == (
        "Invalid arguments for search_images: k must be a whole number from 1 to 20, not null.")


# calls whose arguments break the tool's inputSchema by type, or leave out a required one
WRONG_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [  # (tool, arguments, the argument named)
    ("search_images", {"query": "a dog", "k": "3"}, "k"),
    ("search_images", {"query": "a dog", "k": True}, "k"),
    ("search_images", {"query": "a dog", "k": "many"}, "k"),
    ("search_images", {"query": "a dog", "k": None}, "k"),
    ("search_images", {"query": "a dog", "k": 2.5}, "k"),
    ("search_images", {"query": "a dog", "k": [3]}, "k"),
    ("search_images", {"query": 5}, "query"),
    ("search_images", {"query": None}, "query"),
    ("search_images", {"query": {"text": "a dog"}}, "query"),
    ("search_images", {}, "query"),
    ("search_images", {"query": "a dog", "threshold": "0.5"}, "threshold"),
    ("search_images", {"query": "a dog", "threshold": False}, "threshold"),
    ("search_images", {"query": "a dog", "reference_image": 7}, "reference_image"),
    ("search_images", {"query": "a dog", "reference_image": ["a.jpg"]}, "reference_image"),
    ("describe_image", {"image": None}, "image"),
    ("describe_image", {"image": 1.5}, "image"),
    ("describe_image", {}, "image"),
    ("index_images", {"folder": 7}, "folder"),
    ("index_images", {"folder": True}, "folder"),
]


@pytest.mark.slow
def test_the_python_sdk_client_finds_valid_schemas_valid_results_and_wrong_types_refused(gallery, tmp_path):
    root = gallery[0]
    launcher, *args = server_command(gallery)
    params = StdioServerParameters(command=launcher, args=args, env=dict(os.environ), cwd=str(ROOT))
    reference = "data:image/jpeg;base64," + base64.b64encode((root / BIRD).read_bytes()).decode()
    as_text = reference.replace("image/jpeg", "text/plain", 1)  # the same JPEG, labelled as text
    good = [  # (tool, arguments): every tool, each way of naming an image
        ("search_images", {"query": "two people riding horses along a beach", "k": 3}),
        ("search_images", {"query": "with horses", "reference_image": BIRD, "k": 5, "threshold": None}),
        ("search_images", {"query": "with horses", "reference_image": reference, "k": 5}),
        ("describe_image", {"image": str(root / HORSES)}),
        ("describe_image", {"image": reference}),
        ("index_info", {}),
        ("index_images", {"folder": str(root)}),
        ("search_images", {"query": "a dog", "k": 2.0}),  # an integer in JSON Schema: a number without a fraction
    ]

    async def main():
        with open(tmp_path / "stderr.txt", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT) as client:
                    with anyio.fail_after(CALL_TIMEOUT):
                        await client.initialize()
                        tools = {t.name: t for t in (await client.list_tools()).tools}
                    results = []
                    calls = good + [(t, a) for t, a, _ in WRONG_ARGUMENTS] + [("describe_image", {"image": as_text})] + good[:1]
                    for tool, arguments in calls:
                        with anyio.fail_after(CALL_TIMEOUT):  # a hang fails here, named by the call
                            results.append(await client.call_tool(tool, arguments))
                    return tools, results

    tools, results = anyio.run(main)
    answered, refused = results[:len(good)], results[len(good):len(good) + len(WRONG_ARGUMENTS)]
    text_url, after = results[-2:]

    assert set(tools) == TOOLS
    for tool in tools.values():  # each schema against its metaschema (2020-12 when it names none, as MCP says)
        for schema in (tool.input_schema, tool.output_schema):
            validator_for(schema, default=Draft202012Validator).check_schema(schema)

    for (tool, arguments), result in zip(good, answered):
        assert validates(arguments, tools[tool].input_schema), arguments  # the test's own calls are valid
        assert not result.is_error, (tool, result.content)
        assert validates(result.structured_content, tools[tool].output_schema), (tool, result.structured_content)
    assert answered[0].structured_content["results"][0]["path"] == HORSES
    for composed in answered[1:3]:  # a path or the same bytes as a data URL: the reference is read, not returned
        assert composed.structured_content["reference_caption"] == CAPTIONS[Path(BIRD).stem]
        assert BIRD not in [h["path"] for h in composed.structured_content["results"]]
    assert answered[4].structured_content["caption"] == CAPTIONS[Path(BIRD).stem]

    for (tool, arguments, argument), result in zip(WRONG_ARGUMENTS, refused):
        assert not validates(arguments, tools[tool].input_schema), arguments  # the schema rejects it...
        assert result.is_error and result.structured_content is None, (arguments, result)  # ...and so does the server
        text = result.content[0].text
        assert text.startswith(f"Invalid arguments for {tool}: {argument} "), (arguments, text)
        assert "pydantic" not in text and "http" not in text, text
    # a real JPEG labelled text/plain: refused for its media type (it was told it "must be base64", which it was)
    assert text_url.is_error and "must carry an image media type such as image/png" in text_url.content[0].text
    assert not after.is_error and after.structured_content == answered[0].structured_content  # still serving
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr, stderr


def test_a_data_url_must_carry_an_image_media_type(tmp_path):
    from lensgraph.pipeline.settings import load_settings

    tools = ImageTools(load_settings(db=tmp_path / "db"), ToolConfig())
    jpeg = base64.b64encode((PHOTOS / HORSES).read_bytes()).decode()
    for url in (f"data:text/plain;base64,{jpeg}", f"data:application/octet-stream;base64,{jpeg}"):
        with pytest.raises(ToolError, match="must carry an image media type such as image/png"):
            tools.image_bytes(url)
    assert tools.image_bytes(f"data:image/jpeg;base64,{jpeg}") == (PHOTOS / HORSES).read_bytes()
    assert tools.image_bytes(f"data:IMAGE/JPEG;base64,{jpeg}") == (PHOTOS / HORSES).read_bytes()  # media types ignore case
    with pytest.raises(ToolError, match="must be base64"):
        tools.image_bytes("data:image/png,rawbytes")  # an image media type, but not base64: that is the problem
