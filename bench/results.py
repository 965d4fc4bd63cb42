"""Regenerate the evaluation tables of bench/RESULTS.md from the committed run folders.

Each generated block in RESULTS.md sits between a marker that holds the command and an end marker:

    <!-- generated: lensgraph compare runs/cir-nollm runs/cir-default --markdown --metric mAP@5 -->
    ...the command's output, verbatim...
    <!-- end -->

`python bench/results.py` runs every command (`lensgraph ...` in bench/, so `runs/...` are the
committed folders; `python bench/SCRIPT.py --report FILE` reads a committed result file) and writes
its output into the block; `--check` only says whether the file already matches (exit
status 1 if not). Nothing between the markers is typed by hand.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
BLOCK = re.compile(r"(<!-- generated: (?P<command>.+?) -->\n)(?P<body>.*?)(<!-- end -->)", re.DOTALL)


def run(command: str) -> str:
    """`lensgraph ...` (run in bench/), or a bench script's `--report FILE` (reads a committed file)."""
    args = shlex.split(command)
    if args[0] == "lensgraph":
        argv, cwd = [sys.executable, str(BENCH.parent / "run.py"), *args[1:]], BENCH
    elif args[0] == "python" and args[1].startswith("bench/") and "--report" in args:
        argv, cwd = [sys.executable, *args[1:]], BENCH.parent
    else:
        raise SystemExit(f"only lensgraph commands and bench scripts' --report are run here, not {command!r}")
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{command} failed:\n{out.stderr}")
    return out.stdout.rstrip("\n") + "\n"


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + run(m.group("command")) + m.group(4), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if RESULTS.md differs from what the runs give")
    args = parser.parse_args()
    current = RESULTS.read_text(encoding="utf-8")
    fresh = regenerate(current)
    if args.check:
        if fresh != current:
            print("bench/RESULTS.md differs from the committed runs; run python bench/results.py", file=sys.stderr)
            raise SystemExit(1)
        print(f"bench/RESULTS.md matches its {len(BLOCK.findall(current))} generated blocks")
        return
    RESULTS.write_text(fresh, encoding="utf-8")
    print(f"regenerated {len(BLOCK.findall(current))} blocks of {RESULTS}")


if __name__ == "__main__":
    main()
