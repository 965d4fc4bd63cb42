"""Image loading: every mode to RGB, EXIF orientation, and each kind of bad file skipped with a reason."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from lensgraph.pipeline.errors import ImageLoadError
from lensgraph.pipeline.images import decode_image, file_sha256, iter_image_files, load_image


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    out = decode_image(_png(img))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (3, 3), (0, 255))
    assert decode_image(_png(la)).getpixel((1, 1)) == (0, 0, 0)
    p = Image.new("P", (3, 3), 0)
    p.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    p.info["transparency"] = 0
    assert decode_image(_png(p)).getpixel((0, 0)) == (255, 255, 255)
    p_opaque = Image.new("P", (3, 3), 0)
    p_opaque.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    assert decode_image(_png(p_opaque)).getpixel((0, 0)) == (10, 20, 30)


def test_cmyk_jpeg():
    buf = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buf, format="JPEG")
    r, g, b = decode_image(buf.getvalue()).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # CMYK (0,1,1,0) is red


def test_16_bit_greyscale_is_stretched_not_clipped():
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = decode_image(_png(img))
    values = [out.getpixel((x, y))[0] for y in range(2) for x in range(2)]
    assert values == sorted(values) and values[0] == 0 and values[-1] == 255 and 0 < values[1] < 255


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).size == (20, 40)


def test_real_photo_loads(coco):
    path = next((coco / "images").glob("*.jpg"))
    img = load_image(path)
    assert img.mode == "RGB" and min(img.size) > 100
    assert len(file_sha256(path)) == 64


def make_bad_files(folder) -> dict[str, str]:
    """One file of each bad kind; returns file name -> expected words in the reason."""
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(good, format="JPEG")
    data = good.getvalue()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("this is not an image\n")
    os.symlink(folder / "does-not-exist.jpg", folder / "broken-link.jpg")
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")  # 144 Mpx, tiny on disk
    (folder / "bomb.png").write_bytes(bomb.getvalue())
    return {
        "empty.jpg": "empty",
        "truncated.jpg": "truncated",
        "notes.jpg": "not an image",
        "broken-link.jpg": "unreadable",
        "bomb.png": "too large",
    }


def test_each_bad_file_gives_a_one_line_reason(tmp_path):
    expected = make_bad_files(tmp_path)
    for name, words in expected.items():
        with pytest.raises(ImageLoadError) as info:
            load_image(tmp_path / name)
        assert words in info.value.reason and "\n" not in str(info.value), (name, info.value.reason)


def test_iter_image_files_is_sorted_recursive_and_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for rel in ["b/2.JPG", "a.png", ".hidden/x.jpg", ".dot.jpg", "readme.txt"]:
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)] == ["a.png", "b/2.JPG"]
