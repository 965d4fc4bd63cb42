"""Images as models get them: real MIME types, downscaled once, no process-wide side effects.

The OpenAI backend is checked against a real HTTP server (http.server on 127.0.0.1) that decodes
every data URL it receives, the way vLLM or llama.cpp would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image, ImageDraw, ImageFile

from conftest import ROOT
from lensgraph.pipeline.models.backends import build_backend
from lensgraph.pipeline.models.backends.openai_compat import OpenAIBackend
from lensgraph.pipeline.errors import ImageLoadError
from lensgraph.pipeline.images import decode_image
from lensgraph.pipeline.models.calls import ImageInput, Request, _sniff_mime
from lensgraph.pipeline.settings import load_settings


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def photo(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Something with edges and gradients, so encoders have real work (not one flat colour)."""
    img = Image.linear_gradient("L").resize((width, height)).convert(mode)
    draw = ImageDraw.Draw(img)
    draw.ellipse((width // 4, height // 4, width // 2, height // 2), fill=(200, 30, 30, 255)[: len(mode)])
    return img


# --- _sniff_mime ---------------------------------------------------------------------------------


def test_sniff_mime_names_every_format_lensgraph_reads():
    rgb = photo(24, 16)
    samples = {
        "jpeg": (encode(rgb, "JPEG"), "image/jpeg"),
        "png": (encode(rgb, "PNG"), "image/png"),
        "gif": (encode(rgb, "GIF"), "image/gif"),
        "webp": (encode(rgb, "WEBP"), "image/webp"),
        "bmp": (encode(rgb, "BMP"), "image/bmp"),
        "tiff little-endian": (encode(rgb, "TIFF"), "image/tiff"),
        "tiff big-endian": (encode(Image.new("I;16B", (6, 4), 3000), "TIFF"), "image/tiff"),
        "ppm P6": (encode(rgb, "PPM"), "image/x-portable-pixmap"),
        "pgm P5": (encode(rgb.convert("L"), "PPM"), "image/x-portable-graymap"),
        "ppm P3": (b"P3\n2 1\n255\n255 0 0 0 255 0\n", "image/x-portable-pixmap"),
        "pgm P2": (b"P2\n2 1\n255\n0 255\n", "image/x-portable-graymap"),
    }
    assert samples["tiff little-endian"][0][:2] == b"II" and samples["tiff big-endian"][0][:2] == b"MM"
    for name, (data, expected) in samples.items():
        assert _sniff_mime(data) == expected, name
        assert Image.open(io.BytesIO(data)).get_format_mimetype() == expected, name  # Pillow agrees
    assert _sniff_mime(b"plain text, not an image") == "application/octet-stream"


# --- a tiny OpenAI-compatible server that checks what it is sent ---------------------------------


class ChatServer:
    """`POST /v1/chat/completions` on 127.0.0.1: decodes every image_url data URL, records what it
    declared and what it is, and refuses (HTTP 400) a wrong MIME type or an image over `max_side`."""

    def __init__(self, max_side: int):
        self.max_side = max_side
        self.seen: list[dict] = []  # one per image: declared, actual, size, mode, data
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, reply = server.answer(self.path, body)
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        problems = []
        for message in body["messages"]:
            parts = message["content"] if isinstance(message["content"], list) else []
            for part in (p for p in parts if p["type"] == "image_url"):
                header, _, encoded = part["image_url"]["url"].partition(",")
                declared = header.removeprefix("data:").removesuffix(";base64")
                data = base64.b64decode(encoded)
                img = Image.open(io.BytesIO(data))
                actual = img.get_format_mimetype()
                self.seen.append({"declared": declared, "actual": actual, "size": img.size, "mode": img.mode, "data": data})
                if declared != actual:
                    problems.append(f"declared {declared} but the bytes are {actual}")
                if max(img.size) > self.max_side:
                    problems.append(f"image {img.size} is over {self.max_side} pixels")
        if problems:
            return 400, {"error": {"message": "; ".join(problems)}}
        return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]}

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_backend_sends_real_mime_types_downscaled():
    bmp = encode(photo(800, 600), "BMP")
    tiff = encode(photo(1500, 1000), "TIFF")
    big_jpeg = encode(photo(3000, 2000), "JPEG", quality=90)
    rgba = photo(1200, 800, "RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))  # really see-through in places
    rgba_png = encode(rgba, "PNG")
    images = [ImageInput.from_bytes(d) for d in (bmp, tiff, big_jpeg, rgba_png)]
    with ChatServer(max_side=1024) as server:
        backend = OpenAIBackend("m", base_url=server.url, timeout=30)
        reply = backend.generate(Request("Describe them.", tuple(images)))
    assert reply.text == "ok"
    assert [(s["declared"], s["actual"]) for s in server.seen] == [
        ("image/jpeg", "image/jpeg"),  # BMP: re-encoded, never labelled as what it is not
        ("image/jpeg", "image/jpeg"),  # TIFF
        ("image/jpeg", "image/jpeg"),  # large JPEG: downscaled
        ("image/png", "image/png"),  # transparency kept
    ]
    assert [s["size"] for s in server.seen] == [(800, 600), (1024, 683), (1024, 683), (1024, 683)]
    assert server.seen[3]["mode"] == "RGBA"
    # the ids stay the hashes of the original bytes: the call cache key and the index id
    assert [im.id for im in images] == [hashlib.sha256(d).hexdigest() for d in (bmp, tiff, big_jpeg, rgba_png)]


def test_image_max_side_comes_from_settings_and_small_jpegs_pass_unchanged():
    small = encode(photo(400, 300), "JPEG")
    large = encode(photo(3000, 2000), "PNG")
    with ChatServer(max_side=512) as server:
        settings = load_settings(image_max_side=512, openai_base_url=server.url)
        backend = build_backend("openai:m", settings, None)
        backend.generate(Request("Compare.", (ImageInput.from_bytes(small), ImageInput.from_bytes(large))))
    assert server.seen[0]["data"] == small  # a server takes it as it is: no re-encoding loss
    assert server.seen[1]["size"] == (512, 341) and server.seen[1]["declared"] == "image/jpeg"  # opaque PNG: a photo


def test_rotated_or_animated_images_are_re_encoded_as_shown():
    rotated = photo(40, 20)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display: servers may not
    mime, data = ImageInput.from_bytes(encode(rotated, "JPEG", exif=exif)).for_model(1024)
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).size == (20, 40)
    frames = [Image.new("RGB", (30, 20), colour) for colour in ("red", "green", "blue")]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    mime, data = ImageInput.from_bytes(animated).for_model(1024)
    assert data != animated and mime == "image/png" and Image.open(io.BytesIO(data)).format == "PNG"  # first frame


def test_an_image_is_decoded_once_per_instance(monkeypatch):
    import lensgraph.pipeline.images

    calls = []
    real = lensgraph.pipeline.images.decode_upright
    monkeypatch.setattr(lensgraph.pipeline.images, "decode_upright", lambda *a, **k: calls.append(1) or real(*a, **k))
    image = ImageInput.from_bytes(encode(photo(2000, 1000), "BMP"))
    first = image.for_model(1024)
    assert image.for_model(1024) is first  # a second question about the image: nothing redone
    assert image.pil(512).size == (512, 256) and image.pil().size == (2000, 1000)
    assert image.for_model(256)[1] != first[1]
    assert len(calls) == 1


# --- LOAD_TRUNCATED_IMAGES is the embedding program's business -----------------------------------


def test_importing_pipeline_images_leaves_load_truncated_images_alone():
    script = (
        "from PIL import ImageFile\n"
        "ImageFile.LOAD_TRUNCATED_IMAGES = True\n"
        "import lensgraph.pipeline.images, lensgraph.pipeline.models.calls\n"
        "print(ImageFile.LOAD_TRUNCATED_IMAGES)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"


def test_decoding_is_strict_and_restores_the_callers_flag(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # an embedding program's choice
    good = encode(photo(256, 256), "JPEG")
    truncated = good[: len(good) // 2]  # cut in the scan data: lenient Pillow would pad it grey
    assert decode_image(good).size == (256, 256)
    with pytest.raises(ImageLoadError, match="truncated"):
        decode_image(truncated)  # still loud inside lensgraph, whatever the caller set
    with pytest.raises(ImageLoadError, match="truncated"):
        ImageInput.from_bytes(truncated).pil()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True

    def decode(data: bytes) -> bool:
        try:
            decode_image(data)
            return True
        except ImageLoadError:
            return False

    with ThreadPoolExecutor(4) as pool:  # concurrent decodes share one save and restore
        results = list(pool.map(decode, [good, truncated] * 8))
    assert results == [True, False] * 8
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


# --- hub reachability is re-checked after a failure ----------------------------------------------


def test_hub_is_probed_again_after_the_back_off(monkeypatch):
    import huggingface_hub.constants as hf

    import lensgraph.pipeline.models.hub as hub

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setattr(hub, "_switched_offline", False)
    clock = [1000.0]
    monkeypatch.setattr(hub.time, "monotonic", lambda: clock[0])
    answers, probes = [False, True], []
    monkeypatch.setattr(hub, "_probe", lambda timeout: probes.append(clock[0]) or answers[len(probes) - 1])

    hub.prefer_cache_when_offline()  # a network blip: offline, so cached weights load at once
    assert probes == [1000.0] and hf.HF_HUB_OFFLINE is True
    clock[0] += hub.RECHECK_AFTER - 1
    assert hub.hub_reachable() is False and len(probes) == 1  # believed during the back-off
    clock[0] += 2
    hub.prefer_cache_when_offline()  # probed again: back online
    assert len(probes) == 2 and hf.HF_HUB_OFFLINE is False
    clock[0] += 10_000
    assert hub.hub_reachable() is True and len(probes) == 2  # a success is kept

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's offline mode wins, without probing
    assert hub.hub_reachable() is False and len(probes) == 2


def test_offline_mode_set_by_the_user_is_never_undone(monkeypatch):
    import huggingface_hub.constants as hf

    import lensgraph.pipeline.models.hub as hub

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # e.g. HF_HUB_OFFLINE=1 when huggingface_hub loaded
    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setattr(hub, "_switched_offline", False)
    monkeypatch.setattr(hub, "_probe", lambda timeout: pytest.fail("probed although offline was asked for"))
    hub.prefer_cache_when_offline()
    assert hub.hub_reachable() is False and hf.HF_HUB_OFFLINE is True
