"""The web app's REST API (adapters/web): every endpoint, on a real gallery of the bundled photos,
through a real uvicorn server on 127.0.0.1 where the server matters (streaming, body limits,
concurrency, the `lensgraph serve` command) and FastAPI's TestClient elsewhere. The refusals are
the point as much as the answers; every JSON answer is checked for absolute paths."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from PIL import Image

from conftest import MINILM, RANDOM_CLIP, ROOT, run_main
from local_servers import free_port
from web_helpers import BIRD, HORSES, SECRET, XSS, ServerThread, build_gallery, make_tools, scripted_context, sse_events

from lensgraph.adapters.tools import OUTSIDE_ROOTS
from lensgraph.adapters.web import build_server, check_bind, create_app
from lensgraph.pipeline.errors import LensgraphError

DELAY = 0.15  # seconds per scripted verification answer: verify takes >= 4 x DELAY for 8 candidates


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, clip, minilm):
    g = build_gallery(tmp_path_factory.mktemp("web-api"), clip, minilm)
    g.searcher.__dict__["context"] = scripted_context(g.searcher, delay=DELAY)
    (g.root / "link.jpg").symlink_to(g.outside)  # made after indexing: a link in the root that leads out
    return g


@pytest.fixture(scope="module")
def tools(gallery):
    return make_tools(gallery, max_k=20, max_image_bytes=100_000)


@pytest.fixture(scope="module")
def no_paths(gallery):
    """A response hook: no JSON answer may name a file by an absolute path (only relative to a root)."""
    forbidden = [str(gallery.base), str(gallery.root), tempfile.gettempdir().rstrip("/") + "/", str(ROOT), "lensgraph-ref-"]

    def check(response: httpx.Response) -> None:
        if response.headers.get("content-type", "").startswith("application/json"):
            text = response.read().decode()
            leaks = [f for f in forbidden if f in text]
            assert not leaks, f"{response.request.method} {response.request.url.path} answered with {leaks}: {text[:500]}"
            assert SECRET not in text

    return check


@pytest.fixture(scope="module")
def client(tools, no_paths):
    with TestClient(create_app(tools, warm_up=False), base_url="http://127.0.0.1") as c:
        c.event_hooks["response"].append(no_paths)
        yield c


@pytest.fixture(scope="module")
def server(tools, no_paths):
    with ServerThread(tools) as s, httpx.Client(base_url=s.url, timeout=60, event_hooks={"response": [no_paths]}) as http:
        s.http = http
        yield s


def photo_id(gallery, name: str) -> str:
    from lensgraph.pipeline.models.calls import ImageInput

    return ImageInput.from_bytes((gallery.root / name).read_bytes()).id


def noise_png(side: int) -> bytes:
    """A real image that does not compress: about 3 * side**2 bytes."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# -- answers -------------------------------------------------------------------------------------


def test_index_info(client):
    info = client.get("/api/index").json()
    assert info["images"] == 13 and info["captions"] == 13 and info["clip"] == RANDOM_CLIP
    assert info["stages_available"] == ["retrieve", "reason", "verify", "judge"] and info["stages"] == "judge"
    assert info["roots"] == ["photos"] and info["images_visible"] and not info["token_required"]
    assert info["max_k"] == 20 and info["max_image_bytes"] == 100_000


def test_composed_search_with_evidence_through_the_real_server(server, gallery):
    answer = server.http.post("/api/search", data={"text": "with horses, markup", "reference_path": BIRD, "k": "6"})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["stages"] == ["caption", "reason", "retrieve", "verify", "judge"]
    assert data["explanation"]["caption"] == "A bird that is flying over the sand."  # the stored caption
    assert data["explanation"]["questions"] == [{"question": "Are there horses?", "expected": "yes"}]
    assert XSS in " ".join(data["explanation"]["descriptions"])  # model text as data; the page escapes it
    top = data["results"][0]
    assert top["name"] == HORSES and top["rank"] == 1 and len(data["results"]) == 6
    assert top["evidence"]["passed"] == 1 and top["evidence"]["questions"][0]["answer"] == "Yes"
    assert top["evidence"]["judge"]["verdict"] is True and top["relevance"] > 0.5
    assert photo_id(gallery, BIRD) not in [r["id"] for r in data["results"]]  # the reference is never returned
    image = server.http.get(top["image_url"])
    assert image.status_code == 200 and image.content == (gallery.root / HORSES).read_bytes()
    assert {t["stage"]: t["calls"] for t in data["trace"]}["verify"] == 6


def test_stream_sends_the_retrieval_grid_first_then_each_stage(server, gallery):
    upload = {"reference": ("bird.jpg", (gallery.root / BIRD).read_bytes(), "image/jpeg")}
    with server.http.stream("POST", "/api/search/stream", data={"text": "with horses"}, files=upload) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    names = [name for name, _, _ in events]
    assert names == ["stage"] * 6 + ["done"]
    ranked = [(data["stage"], data, at) for name, data, at in events if name == "stage" and data["results"] is not None]
    # the raw request's plain retrieval first (before the plan), then retrieval with the plan, then each stage
    assert [stage for stage, _, _ in ranked] == ["preview", "retrieve", "verify", "judge"]
    preview, retrieve, verify, judge = ranked
    assert preview[1]["trace"][0]["stage"] == "preview" and len(preview[1]["results"]) == len(retrieve[1]["results"])
    assert all(r["evidence"] is None for r in retrieve[1]["results"])
    assert all(r["evidence"] is not None for r in verify[1]["results"])
    assert verify[1]["results"][0]["name"] == HORSES
    # the grid arrived while verification was still running, not buffered until the end
    assert verify[2] - retrieve[2] >= 2 * DELAY, (retrieve[2], verify[2])
    done = events[-1][1]
    assert [r["id"] for r in done["results"]] == [r["id"] for r in judge[1]["results"]]
    assert done["explanation"]["reference_id"] == photo_id(gallery, BIRD)


def test_stream_by_get_with_an_indexed_reference_and_fewer_stages(client, gallery):
    params = {"text": "with horses", "reference_id": photo_id(gallery, BIRD), "stages": "verify", "k": 4}
    with client.stream("GET", "/api/search/stream", params=params) as response:
        assert response.status_code == 200
        events = sse_events(response.iter_lines())
    assert events[-1][0] == "done" and events[-1][1]["stages"] == ["caption", "reason", "retrieve", "verify"]
    assert len(events[-1][1]["results"]) == 4


def test_a_reference_alone_finds_similar_images(client, gallery):
    bird = photo_id(gallery, BIRD)
    data = client.post("/api/search", data={"reference_id": bird, "k": "5"}).json()
    assert [t["stage"] for t in data["trace"]] == ["retrieve"] and len(data["results"]) == 5
    assert bird not in [r["id"] for r in data["results"]] and data["explanation"]["reference_id"] == bird


def test_threshold_keeps_only_results_whose_evidence_reaches_it(client, gallery):
    data = client.post("/api/search", data={"text": "with horses", "reference_path": BIRD, "threshold": "0.5"}).json()
    assert data["results"] and all(r["relevance"] >= 0.5 for r in data["results"])
    assert len(data["results"]) < 8


def test_image_bytes_and_a_thumbnail_made_once(client, gallery, tools):
    image_id = photo_id(gallery, HORSES)
    image = client.get(f"/api/images/{image_id}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == (gallery.root / HORSES).read_bytes() and image.headers["x-content-type-options"] == "nosniff"
    thumb = client.get(f"/api/images/{image_id}/thumbnail", params={"size": 256})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert img.format == "JPEG" and max(img.size) == 256
    cached = tools.settings.db.parent / "thumbnails" / f"{image_id}-256.jpg"
    assert cached.read_bytes() == thumb.content
    marker = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(marker, "JPEG")
    cached.write_bytes(marker.getvalue())  # a second request is served from the cache
    assert client.get(f"/api/images/{image_id}/thumbnail").content == marker.getvalue()
    cached.unlink()


def test_chat_thread(client):
    first = client.post("/api/chat/web-1", json={"message": "a dog", "k": 3}).json()
    assert first["description"] == "a dog" and len(first["results"]) == 3
    assert first["results"][0]["name"] == "000000377575.jpg"  # "A dog is tied to a fire hydrant."
    assert [t["stage"] for t in first["trace"]][:2] == ["refine", "caption"] and first["explanation"]["descriptions"] == ["a dog"]
    second = client.post("/api/chat/web-1", json={"message": "tied to a hydrant"}).json()
    assert second["description"] == "a dog, tied to a hydrant"
    thread = client.get("/api/chat/web-1").json()
    assert [t["message"] for t in thread["turns"]] == ["a dog", "tied to a hydrant"]
    assert client.get("/api/chat/new-one").json()["turns"] == []
    assert client.post("/api/chat/bad id!", json={"message": "x"}).status_code == 400


def test_openapi_schema_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/search/stream", "/api/index", "/api/images/{image_id}",
            "/api/images/{image_id}/thumbnail", "/api/chat/{thread_id}"} <= set(schema["paths"])
    assert "reference" in json.dumps(schema["components"])  # the upload field is described
    assert client.get("/docs").status_code == 200


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../outside/elsewhere.jpg", "OUTSIDE", "/etc/passwd", "link.jpg", "../../../../etc/hostname"])
def test_reference_paths_outside_the_roots_are_refused(client, gallery, path):
    path = str(gallery.outside) if path == "OUTSIDE" else path
    answer = client.post("/api/search", data={"text": "with horses", "reference_path": path})
    assert answer.status_code == 403 and answer.json() == {"error": OUTSIDE_ROOTS}


def test_images_outside_the_roots_are_not_served_or_named(client, gallery):
    for url in (f"/api/images/{gallery.outside_id}", f"/api/images/{gallery.outside_id}/thumbnail",
                "/api/images/0123abcd", "/api/images/..%2F..%2Fetc%2Fpasswd"):
        answer = client.get(url)
        assert answer.status_code == 404 and "error" in answer.json(), url
    refused = client.post("/api/search", data={"text": "x", "reference_id": gallery.outside_id})
    assert refused.status_code == 404 and "under the allowed folders" in refused.json()["error"]
    everything = client.post("/api/search", data={"text": "horses on a beach", "stages": "retrieve", "k": "13"}).json()
    outside = next(r for r in everything["results"] if r["id"] == gallery.outside_id)  # found, but not shown
    assert outside["name"] is None and outside["image_url"] is None and outside["thumbnail_url"] is None
    assert client.post("/api/search", data={"text": "x", "reference_path": "missing.jpg"}).status_code == 404


def test_oversized_uploads_are_413_with_a_clear_message(client, server):
    over_cap = noise_png(190)  # ~108 KB: passes the body limit, refused by the image cap
    answer = client.post("/api/search", data={"text": "x"}, files={"reference": ("big.png", over_cap, "image/png")})
    assert answer.status_code == 413 and "larger than 100,000 bytes" in answer.json()["error"]
    huge = noise_png(420)  # ~530 KB: refused by the body limit before anything is parsed
    answer = client.post("/api/search", data={"text": "x"}, files={"reference": ("huge.png", huge, "image/png")})
    assert answer.status_code == 413 and "at most 100,000 bytes" in answer.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, len(huge), 65536):
            yield huge[start:start + 65536]

    answer = server.http.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 413 and "at most 100,000 bytes" in answer.json()["error"]


def test_a_413_states_the_operators_limit_not_the_body_cap(client):
    """--max-upload 100000: a 300 KB upload is refused before parsing, by the body cap derived from
    the limit; the message names the limit the caller can act on (it said "larger than 165,536 bytes")."""
    answer = client.post("/api/search", data={"text": "x"}, files={"reference": ("big.png", noise_png(316), "image/png")})
    message = answer.json()["error"]
    assert answer.status_code == 413 and "100,000 bytes" in message, message
    assert not re.search(r"\d{3},\d{3}", message.replace("100,000", "")), message  # no other size in it


def test_an_image_under_the_limit_is_accepted_as_a_data_url_too(gallery):
    """A data URL is base64, 4/3 of the image: the body cap makes room for it (it was the limit plus
    64 KiB, so a 290 KB image under a 300 KB limit was a 413 in a chat turn)."""
    import base64

    image = noise_png(310)  # ~290 KB
    assert 250_000 < len(image) < 300_000
    tools = make_tools(gallery, max_image_bytes=300_000)
    with TestClient(create_app(tools, warm_up=False), base_url="http://127.0.0.1") as c:
        url = "data:image/png;base64," + base64.b64encode(image).decode()
        answer = c.post("/api/chat/web-big-url", json={"message": "a dog", "k": 1, "reference_image": url})
    assert answer.status_code == 200, answer.text


def test_bad_parameters_are_clear_json_errors(client):
    cases = [({"text": "x", "k": "0"}, 400, "k: Input should be greater than or equal to 1"),
             ({"text": "x", "k": "21"}, 400, "k: Input should be less than or equal to 20"), ({"text": "x", "k": "abc"}, 400, "k:"),
             ({"text": "x", "stages": "everything"}, 400, "stages is one of"), ({}, 400, "Give a text"),
             ({"text": "x" * 2001}, 400, "text: String should have at most 2000 characters"),
             ({"text": "x", "threshold": "2"}, 400, "threshold:"),
             ({"text": "x", "reference_id": "a", "reference_path": "b"}, 400, "one reference")]
    for form, status, words in cases:
        answer = client.post("/api/search", data=form)
        assert answer.status_code == status and words in answer.json()["error"], (form, answer.text)
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_invalid_input_is_one_status_everywhere_as_documented(client, gallery):
    """FastAPI's own validation (thumbnail size, k's type) answered 422 where the server's checks
    answered 400 (k=0): every invalid input is now a 400, the only one the schema documents."""
    horses = photo_id(gallery, HORSES)
    answers = [client.get(f"/api/images/{horses}/thumbnail", params={"size": 15}),
               client.post("/api/search", data={"text": "x", "k": "0"}), client.post("/api/search", data={"text": "x", "k": "abc"}),
               client.get("/api/search/stream", params={"text": "x", "threshold": "high"}),
               client.post("/api/chat/web-invalid", json={"message": ["not", "text"]}), client.post("/api/chat/web-invalid", json={})]
    assert [a.status_code for a in answers] == [400] * len(answers), [a.text for a in answers]
    assert all(set(a.json()) == {"error"} for a in answers)
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"] and "400" in operation["responses"], (method, path)


def test_the_schema_declares_the_limits_the_server_enforces(client, tools):
    """Each limit the server enforces is in /openapi.json, from the same definition, so a request
    the schema allows is not refused as invalid (k, threshold, text and message length, the thread
    id, the stages this server runs)."""
    from lensgraph.adapters.web.inputs import NON_BLANK
    from lensgraph.adapters.web.operations import THREAD_ID, THREAD_ID_CHARS

    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    form = components["Body_search_api_search_post"]["properties"]
    (query,) = schema["paths"]["/api/search/stream"]["get"]["parameters"]
    stages = client.get("/api/index").json()["stages_available"]
    for fields in (form, query["schema"]["properties"]):
        assert (fields["k"]["minimum"], fields["k"]["maximum"]) == (1, tools.config.max_k)
        assert (fields["threshold"]["minimum"], fields["threshold"]["maximum"]) == (0, 1)
        assert fields["text"]["maxLength"] == tools.config.max_text_chars
        assert fields["stages"]["enum"] == stages
    chat = components["ChatRequest"]["properties"]
    assert chat["message"]["maxLength"] == tools.config.max_text_chars and chat["message"]["pattern"] == NON_BLANK
    assert chat["k"]["anyOf"][0]["maximum"] == tools.config.max_k
    for method in ("get", "post"):
        (thread,) = schema["paths"]["/api/chat/{thread_id}"][method]["parameters"]
        assert thread["schema"]["pattern"] == THREAD_ID.pattern and thread["schema"]["maxLength"] == THREAD_ID_CHARS
    # the server holds to them: at a limit accepted, past it a 400
    assert client.post("/api/search", data={"text": "x" * 2000, "k": "20", "stages": "retrieve", "threshold": "0"}).status_code == 200
    assert client.get("/api/chat/" + "t" * 64).status_code == 200
    for thread in ("t" * 65, "bad id!", "abc%0A"):  # a final newline passed `re.match` with `$`
        answer = client.get(f"/api/chat/{thread}")
        assert answer.status_code == 400 and "thread_id" in answer.json()["error"], (thread, answer.text)


def test_the_schema_states_the_rules_across_search_fields(client, gallery):
    """A text or a reference, one reference at most: what the schema says of a query is what the
    server answers (OpenAPI relates no two query parameters, so the GET's are one exploded object)."""
    (query,) = client.get("/openapi.json").json()["paths"]["/api/search/stream"]["get"]["parameters"]
    assert (query["in"], query["style"], query["explode"], query["required"]) == ("query", "form", True, True)
    valid = Draft202012Validator(query["schema"]).is_valid
    bird = photo_id(gallery, BIRD)
    for params in [{}, {"text": " \u3000\x1c"}, {"text": "dogs"}, {"reference_id": bird}, {"text": "", "reference_path": BIRD},
                   {"reference_id": bird, "reference_path": BIRD}, {"text": "dogs", "reference_id": ""}, {"text": "dogs", "stages": ""},
                   {"text": "dogs", "stages": "verify", "k": 3}]:
        with client.stream("GET", "/api/search/stream", params=params) as answer:
            assert (answer.status_code == 200) == valid(params), (params, answer.status_code, answer.read())
            assert answer.status_code in (200, 400)


def test_an_empty_upload_is_no_image_not_no_reference(client):
    """The schema counts an upload by its part (a file was sent); an empty one was taken as no
    reference, so a search the schema calls a composed one ran on the text alone."""
    for form in ({"text": "a dog"}, {}):
        answer = client.post("/api/search", data=form, files={"reference": ("empty.png", b"", "image/png")})
        assert answer.status_code == 400 and "empty file" in answer.json()["error"], answer.text


def test_non_blank_is_what_str_strip_keeps():
    """The schema's "not blank" (a JSON Schema regex) is the server's (`str.strip`): Python's whitespace
    is listed, since JSON Schema's `\\s` differs from it."""
    from lensgraph.adapters.web.inputs import NON_BLANK

    pattern = re.compile(NON_BLANK)
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert len(spaces) == 29 and not any(pattern.search(c) for c in spaces)
    assert all(pattern.search(c) for c in ("a", "\ufeff", "\x00", "\u200b", "é"))


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("OPTIONS", "/api/chat/web-1", {"GET", "POST"}), ("DELETE", "/api/search/stream", {"GET", "POST"}),
    ("PUT", "/api/search", {"POST"}), ("DELETE", "/api/images/abc", {"GET"})])
def test_405_allow_names_every_method_of_the_path(client, method, path, allowed):
    """A path with a route per method: Starlette's 405 named the first route's only (`Allow: POST`)."""
    answer = client.request(method, path)
    assert answer.status_code == 405 and "error" in answer.json()
    assert set(answer.headers["allow"].split(", ")) - {"HEAD"} == allowed, answer.headers["allow"]


def test_405_and_421_are_documented_for_every_operation(client):
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"405", "421"} <= set(responses), (method, path)
            assert responses["405"]["headers"]["Allow"]["required"], (method, path)


def test_every_failure_is_a_redacted_json_error_never_a_traceback(gallery):
    class Broken:  # an index that fails with secrets and paths in its message
        @property
        def index(self):
            raise RuntimeError(f"disk error reading {gallery.root}/x.bin with key {SECRET}")

    tools = make_tools(gallery)
    tools._searcher = Broken()
    with TestClient(create_app(tools, warm_up=False), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        answer = c.get(f"/api/images/{photo_id(gallery, HORSES)}")
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/json"
    message = answer.json()["error"]
    assert message.startswith("Internal error (RuntimeError: disk error reading x.bin with key [redacted])")
    assert SECRET not in message and str(gallery.base) not in message and "Traceback" not in message


def test_concurrent_searches_beyond_the_limit_are_429(gallery):
    tools = make_tools(gallery, max_concurrent=1)
    with ServerThread(tools) as s, httpx.Client(base_url=s.url, timeout=60) as http:
        with http.stream("POST", "/api/search/stream", data={"text": "with horses", "reference_path": BIRD}) as first:
            lines = first.iter_lines()
            opening = next(lines)
            assert opening.startswith("event: stage")  # the first search holds the only slot
            second = http.post("/api/search", data={"text": "a dog"})
            assert second.status_code == 429 and "Too many concurrent calls" in second.json()["error"]
            assert sse_events(itertools.chain([opening], lines))[-1][0] == "done"


def test_token_is_required_on_every_api_request(tools):
    token = "s3cret-token-value"
    with TestClient(create_app(tools, token, warm_up=False), base_url="http://127.0.0.1", follow_redirects=False) as c:
        for headers, params in [({}, {}), ({"Authorization": "Bearer wrong"}, {}), ({}, {"token": "wrong"}),
                                ({"Authorization": f"Basic {token}"}, {})]:
            answer = c.get("/api/index", headers=headers, params=params)
            assert answer.status_code == 401 and "needs a token" in answer.json()["error"] and token not in answer.text
        assert c.get("/api/images/x/thumbnail").status_code == 401
        assert c.get("/api/index", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/api/index", params={"token": token}).status_code == 200
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200  # no data in them
        login = c.get("/", params={"token": token})
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert "httponly" in login.headers["set-cookie"].lower() and "samesite=strict" in login.headers["set-cookie"].lower()
        assert c.get("/api/index").status_code == 200  # the cookie the page's <img> tags carry


def test_cross_site_requests_and_foreign_host_names_are_refused(client):
    cross = client.post("/api/search", data={"text": "x"}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "Cross-site" in cross.json()["error"]
    rebound = client.get("/api/index", headers={"Host": "evil.example"})
    assert rebound.status_code == 421
    assert client.post("/api/search", data={"text": "a dog", "stages": "retrieve"},
                       headers={"Origin": "http://127.0.0.1"}).status_code == 200


def test_refuses_to_serve_beyond_loopback_without_a_token(tools, capsys):
    for host in ("0.0.0.0", "::", "192.168.1.10", "photos.example.org"):
        with pytest.raises(LensgraphError, match="without a token"):
            check_bind(host, None)
    with pytest.raises(LensgraphError, match="without a token"):
        build_server(tools, "0.0.0.0", free_port(), None)
    check_bind("0.0.0.0", "a-token")
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    code, out, err = run_main(capsys, "serve", "--host", "0.0.0.0", "--db", str(tools.settings.db))
    assert code == 2 and "without a token" in err and "LENSGRAPH_TOKEN" in err and not out


def test_the_serve_command_starts_and_says_where(gallery):
    """`lensgraph serve` in its own process: the start line, the token, the index, the page."""
    port = free_port()
    env = {**os.environ, "LENSGRAPH_TOKEN": "tok-123", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "run.py"), "serve", "--db", str(gallery.searcher.settings.db),
               "--root", str(gallery.root), "--port", str(port), "--tau", "1", "--clip", RANDOM_CLIP, "--text-encoder", MINILM]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"Serving http://127.0.0.1:{port}/ (a token is required"), line + proc.stderr.read()
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/index", headers={"Authorization": "Bearer tok-123"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.3)
        assert answer.status_code == 200 and answer.json()["images"] == 13 and answer.json()["token_required"]
        assert httpx.get(f"http://127.0.0.1:{port}/api/index").status_code == 401
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_status_codes_follow_the_kind_of_refusal_not_its_wording():
    from lensgraph.adapters.tools import Busy, Forbidden, NotFound, ToolError, TooLarge, TooManyCalls
    from lensgraph.adapters.web.app import status_of
    from lensgraph.pipeline.errors import IndexNotFound

    cases = [(Forbidden(OUTSIDE_ROOTS), 403), (NotFound("gone"), 404), (TooLarge("big"), 413),
             (TooManyCalls("slow down"), 429), (Busy("later"), 503), (IndexNotFound("no index"), 503),
             (ToolError("The image is larger than the photo of a larger than life statue"), 400),
             (ToolError("No such luck"), 400), (LensgraphError("bad flag"), 400), (RuntimeError("bug"), 500)]
    assert [status_of(e) for e, _ in cases] == [code for _, code in cases]


def test_chat_keeps_its_reference_image_across_turns(client, gallery, tools):
    import base64
    import hashlib

    bird = photo_id(gallery, BIRD)
    first = client.post("/api/chat/web-ref", json={"message": "with horses", "k": 4, "reference_id": bird}).json()
    assert first["reference_id"] == bird and first["results"] and bird not in [r["id"] for r in first["results"]]
    assert "caption" in [t["stage"] for t in first["trace"]]  # the reference was read
    second = client.post("/api/chat/web-ref", json={"message": "on the beach", "k": 4}).json()
    assert second["reference_id"] == bird and bird not in [r["id"] for r in second["results"]]
    assert client.get("/api/chat/web-ref").json()["reference_id"] == bird
    kept = tools.settings.db.parent / "chat-references" / f"{bird}.img"
    assert kept.read_bytes() == (gallery.root / BIRD).read_bytes()  # a copy: the thread outlives the request

    data = (gallery.root / HORSES).read_bytes()
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    upload = client.post("/api/chat/web-upload", json={"message": "at night", "k": 2, "reference_image": url}).json()
    assert upload["reference_id"] == hashlib.sha256(data).hexdigest() and len(upload["results"]) == 2

    refused = [client.post("/api/chat/web-bad", json={"message": "x", **body}) for body in (
        {"reference_image": "/etc/passwd"}, {"reference_path": "/etc/passwd"},
        {"reference_id": bird, "reference_path": BIRD}, {"reference_image": "data:image/png;base64,aGVsbG8="},
        {"reference_image": ""})]  # found by schemathesis: an empty string was taken for no reference
    assert [r.status_code for r in refused] == [400, 403, 400, 400, 400], [r.json() for r in refused]
    assert "data URL" in refused[0].json()["error"]  # a path given as reference_image is never read
    assert client.get("/api/chat/web-bad").json()["turns"] == []  # nothing was sent
