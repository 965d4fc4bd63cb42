"""Print a markdown table of evaluation runs (one row per run and ranking stage).

    python bench/eval_table.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CIR = ["mAP@5", "mAP@10", "mAP@25", "mAP@50", "R@1", "R@5", "R@10", "R@50"]
T2I = ["R@1", "R@5", "R@10"]


def main(paths: list[str]) -> None:
    rows = []
    columns: list[str] = []
    for path in map(Path, paths):
        summary = json.loads((path / "metrics.json").read_text())
        definition = json.loads((path / "run.json").read_text())
        columns = CIR if definition.get("task") == "cir" else T2I
        total = summary["costs_per_query"].get("total", {})
        for stage, metrics in summary["metrics"].items():
            cells = [f"{metrics.get(c, float('nan')):.1f}" for c in columns]
            rows.append(f"| {path.name} | {stage} | {summary['queries']} | " + " | ".join(cells)
                        + f" | {total.get('calls', 0):.1f} | {total.get('seconds', 0):.1f} |")
    print("| run | after stage | queries | " + " | ".join(columns) + " | calls/query | s/query |")
    print("|---|---|---|" + "---|" * len(columns) + "---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
