"""The REST API against its own OpenAPI document, with schemathesis: every operation of the served
`/openapi.json` of a real uvicorn server, on a real index of the bundled photos (retrieval only, no
model), with all of schemathesis's checks, on requests the schema allows and on requests it does not.
No server error, every answer as the schema says, every status documented, what the schema allows is
accepted (every limit the server enforces is declared in it) and what it does not is refused.

The SSE endpoint (`/api/search/stream`, POST and GET) is included: retrieval alone ends the stream
after a few events, which schemathesis reads whole.

Where the document names content a generator cannot guess, the test says what it is: an upload's
part is `image/*` and the chat's `reference_image` a `data-url`; both get real (small) images."""

from __future__ import annotations

import base64
import io
import os

import pytest
from hypothesis import strategies as st
from PIL import Image

from web_helpers import ServerThread, build_gallery, make_tools

try:
    import schemathesis
    from schemathesis.config import SchemathesisConfig
except ImportError:  # a dev dependency: CI installs it, so there a missing one is an error
    if os.environ.get("CI"):
        raise
    pytest.skip("needs schemathesis (pip install -e '.[dev]')", allow_module_level=True)

from lensgraph.adapters.web.inputs import DATA_URL_FORMAT

MAX_EXAMPLES = 50
"""Examples per operation in the fuzzing phase, beside the examples and coverage phases' own."""
SEED = 19
"""Fixed, so a run is repeatable; another seed explores other requests."""


@st.composite
def png_images(draw: st.DrawFn) -> bytes:
    """A small real image: what an upload is, beyond the bytes the schema can describe."""
    side = st.integers(1, 48)
    color = st.tuples(*[st.integers(0, 255)] * 3)
    buf = io.BytesIO()
    Image.new("RGB", (draw(side), draw(side)), draw(color)).save(buf, "PNG")
    return buf.getvalue()


schemathesis.openapi.media_type("image/png", png_images())
schemathesis.openapi.format(DATA_URL_FORMAT, png_images().map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode()))


@pytest.fixture(scope="module")
def server(tmp_path_factory, clip, minilm):
    gallery = build_gallery(tmp_path_factory.mktemp("conformance"), clip, minilm)  # no LLM: stages up to retrieve
    tools = make_tools(gallery, max_k=20, max_image_bytes=100_000)
    with ServerThread(tools) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=SchemathesisConfig(seed=SEED))
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
    return schema


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request):
    """schemathesis 4.32's lazy loader reads and renames `item._nodeid`, which pytest 9.2 no longer
    has (its ids are structured now): give it the plain string, which nothing else reads."""
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_operation_conforms_to_the_schema(case):
    case.call_and_validate()  # every check schemathesis has (all are enabled by default)
