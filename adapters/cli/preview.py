"""Inline thumbnails in terminals that can show images: kitty's graphics protocol and iTerm2's
inline images (also WezTerm). Elsewhere nothing is written, so output stays clean."""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

THUMBNAIL = 160  # pixels, longest side


def protocol(env: dict[str, str] | None = None, tty: bool | None = None) -> str | None:
    """"kitty", "iterm" or None, from the terminal's environment (only when stdout is a terminal)."""
    env = os.environ if env is None else env
    if not (sys.stdout.isatty() if tty is None else tty):
        return None
    if env.get("KITTY_WINDOW_ID") or env.get("TERM") == "xterm-kitty":
        return "kitty"
    if env.get("TERM_PROGRAM") in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    return None


def thumbnail_png(path: str | os.PathLike, size: int = THUMBNAIL) -> bytes | None:
    from lensgraph.pipeline.images import load_image

    try:
        image = load_image(Path(path))
    except Exception:  # an unreadable file simply gets no thumbnail
        return None
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def inline_image(path: str | os.PathLike, kind: str | None = None) -> str | None:
    """The escape sequence that draws the image's thumbnail, or None where it cannot be shown."""
    kind = kind or protocol()
    if kind is None:
        return None
    data = thumbnail_png(path)
    if data is None:
        return None
    encoded = base64.standard_b64encode(data).decode()
    if kind == "iterm":
        return f"\033]1337;File=inline=1;size={len(data)};preserveAspectRatio=1:{encoded}\a"
    chunks = [encoded[i:i + 4096] for i in range(0, len(encoded), 4096)]  # kitty: at most 4096 bytes a chunk
    parts = []
    for n, chunk in enumerate(chunks):
        more = 1 if n < len(chunks) - 1 else 0
        head = f"a=T,f=100,m={more}" if n == 0 else f"m={more}"
        parts.append(f"\033_G{head};{chunk}\033\\")
    return "".join(parts)
