"""`lensgraph eval` and `compare` on coco-mini: per-stage metrics, resume, errors counted, comparison."""

from __future__ import annotations

import json

import pytest

from conftest import MINILM, RANDOM_CLIP, cli_json, run_cli
from lensgraph.graphs.evaluation import Evaluation
from lensgraph.pipeline.evaluation.datasets import load_dataset


@pytest.fixture(scope="module")
def common(coco_searcher, coco):
    return ["--annotations", str(coco), "--images", str(coco), "--mode", "caption", "--db", str(coco_searcher.settings.db),
            "--index", coco_searcher.settings.index, "--clip", RANDOM_CLIP, "--text-encoder", MINILM]


def test_no_llm_baseline_matches_the_reference_numbers(common, tmp_path):
    """coco-mini's README: reference caption + instruction embedded with MiniLM, caption channel only."""
    out = tmp_path / "nollm"
    summary = cli_json("eval", "--dataset", "coco-mini-cir", "--stages", "retrieve", "--out", str(out), *common)
    m = summary["metrics"]["retrieve"]
    assert summary["queries"] == 176 and summary["errors"] == 0
    got = [round(m[key], 1) for key in ("mAP@5", "mAP@10", "R@1", "R@10", "R@50")]
    assert got == [16.1, 19.0, 8.0, 48.9, 81.8]
    assert {"add:mAP@5", "remove:mAP@5", "replace:mAP@5"} <= set(m)
    records = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    assert len(records) == 176 and all(len(r["rankings"]["retrieve"]) == 50 for r in records)
    assert all(r["truth"]["reference"] not in r["rankings"]["retrieve"] for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["queries"] == 176 and (out / "prompts" / "reason.txt").is_file()

    t2i = cli_json("eval", "--dataset", "coco-mini-t2i", "--stages", "retrieve", "--out", str(tmp_path / "t2i"), *common)
    assert t2i["queries"] == 62 and t2i["metrics"]["retrieve"]["R@10"] >= 80.0


def test_resume_keeps_finished_queries_and_refuses_a_different_run(coco_searcher, coco, tmp_path):
    settings = coco_searcher.settings.model_copy(update={"stages": "retrieve"})
    dataset = load_dataset("coco-mini-cir", coco, coco)
    out = tmp_path / "run"
    first = Evaluation(settings, dataset, out, "caption").run(limit=10)
    assert first["queries"] == 10
    lines = (out / "rankings.jsonl").read_text().splitlines()
    (out / "rankings.jsonl").write_text("\n".join(lines[:6]) + "\n" + lines[6][:20])  # a kill mid-write
    seen = []
    again = Evaluation(settings, dataset, out, "caption").run(limit=12, progress=lambda d, t: seen.append((d, t)))
    assert again["queries"] == 12 and seen[0] == (6, 12)  # six kept, the torn line redone
    assert again["metrics"] and again["errors"] == 0
    other = settings.model_copy(update={"k": 7})
    with pytest.raises(Exception, match="different run"):
        Evaluation(other, dataset, out, "caption").run(limit=12)


def test_a_failing_query_is_counted_not_dropped(coco_searcher, coco, tmp_path):
    from dataclasses import replace

    settings = coco_searcher.settings.model_copy(update={"stages": "retrieve"})
    dataset = load_dataset("coco-mini-cir", coco, coco)
    broken = replace(dataset.queries[0], reference="999999999")  # not in the gallery
    dataset.queries = [broken] + dataset.queries[1:4]
    summary = Evaluation(settings, dataset, tmp_path / "run", "caption").run()
    assert summary["queries"] == 4 and summary["errors"] == 1
    assert summary["metrics"]["retrieve"]["n"] == 4  # scored as a miss


def test_compare_two_runs(common, tmp_path, coco_searcher):
    a, b = tmp_path / "a", tmp_path / "b"
    cli_json("eval", "--dataset", "coco-mini-cir", "--stages", "retrieve", "--limit", "40", "--out", str(a), *common)
    cli_json("eval", "--dataset", "coco-mini-cir", "--stages", "retrieve", "--limit", "40", "--tau", "0.5",
             "--out", str(b), *common)
    result = cli_json("compare", str(a), str(b), "--plot", str(tmp_path / "plot.png"))
    diff = result["differences"][0]
    assert diff["n"] == 40 and diff["ci"][0] <= diff["mean"] <= diff["ci"][1]
    assert diff["wins"] + diff["losses"] + diff["ties"] == 40
    assert len(result["disagreements"]) == 5 and (tmp_path / "plot.png").stat().st_size > 10_000
    table = run_cli("compare", str(a), str(b))
    assert table.returncode == 0 and "mAP@10" in table.stdout and "bootstrap CI" in " ".join(table.stdout.split())
    md = run_cli("compare", str(a), str(b), "--markdown").stdout.splitlines()
    assert md[0].startswith("| run | after stage | queries | mAP@5 |") and len(md[0].split("|")) == len(md[1].split("|"))
    assert md[2].startswith("| a | retrieve | 40 |") and md[3].startswith("| b | retrieve | 40 |")
    assert any(line.startswith("b vs a (retrieve vs retrieve, mAP@10, 40 paired queries)") for line in md)
    bad = run_cli("compare", str(tmp_path))
    assert bad.returncode == 2 and "not a run folder" in bad.stderr


def test_eval_a_test_split_then_write_the_circo_submission(tmp_path, capsys):
    """The official CIRCO file layout (fixture), vision mode with no models: retrieval only."""
    from conftest import run_main

    fix = __import__("pathlib").Path(__file__).parent / "fixtures" / "circo"
    args = ["--dataset", "circo", "--annotations", str(fix / "annotations" / "test.json"), "--images", str(fix)]
    code, out, err = run_main(capsys, "eval", *args, "--split", "test", "--out", str(tmp_path / "run"),
                              "--db", str(tmp_path / "db"), "--clip", RANDOM_CLIP, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["queries"] == 2 and summary["metrics"]["retrieve"]["skipped"] == 2  # no ground truth in test
    code, out, err = run_main(capsys, "submit", str(tmp_path / "run"), *args, "--out", str(tmp_path / "circo.json"))
    assert code == 0, err
    submission = json.loads((tmp_path / "circo.json").read_text())
    assert set(submission) == {"0", "1"} and all(isinstance(i, int) for i in submission["0"])
    assert 251485 not in submission["1"]  # the reference is never submitted


def test_verifier_separation_hand_computed():
    from lensgraph.pipeline.evaluation.diagnostics import verifier_separation

    def record(targets, matches, questions=2):
        return {"truth": {"targets": targets}, "matches": matches, "questions": [{"question": "?", "expected": "yes"}] * questions}

    records = {
        "1": record(["a"], {"a": 2, "b": 1, "c": 0}),  # correct 1.0 vs wrong 0.5, 0.0
        "2": record(["d"], {"d": 1, "e": 1}),  # a tie: 0.5 vs 0.5
        "3": record([], {"f": 2}),  # no ground truth: not counted
        "4": {"truth": {"targets": ["g"]}},  # no verification (retrieve-only record)
    }
    v = verifier_separation(list(records.values()))
    # pairs (correct, wrong): (1,.5) (1,0) (1,.5) win win win; (.5,.5) tie, (.5,0) win, (.5,.5) tie -> (4 + 0.5*2) / 6
    # accuracy of "evidence > 0.5 means correct": a (1.0) right; d (0.5) wrong; b, c, e (<= 0.5) right -> 4/5
    assert v == {"correct": 2, "wrong": 3, "evidence_correct": 0.75, "evidence_wrong": 0.333, "auc": round(5 / 6, 3),
                 "accuracy": 0.8}
    assert verifier_separation([records["4"]]) is None


def test_degraded_records_are_the_ones_with_failed_model_calls():
    from lensgraph.pipeline.evaluation.runfiles import degraded

    clean = {"trace": [{"stage": "reason", "failures": 0}], "warnings": ["reason: reply cut by max_tokens"]}
    assert not degraded(clean)
    assert degraded({"trace": [{"stage": "verify", "failures": 3}]})
    assert degraded({"error": "ModelError: boom", "trace": []})
    assert degraded({"trace": [{"stage": "reason"}], "warnings": ["reason: openai:qwen: Connection error. (gave up after 4 attempts)"]})


# Run in a child process: the resume rewrite of OUT stops at POINT (halfway through writing the new
# file, or with it written and not yet renamed) and says so; the test then kills it there.
HALT_REWRITE = """
import os, sys, time
from pathlib import Path
from lensgraph.graphs.evaluation import run_queries

out, point = Path(sys.argv[1]), sys.argv[2]
def halt():
    print("halted", flush=True)
    time.sleep(60)
if point == "writing":
    fdopen = os.fdopen
    class HalfWay:
        def __init__(self, f): self.f, self.lines = f, 0
        def __enter__(self): return self
        def __exit__(self, *exc): return self.f.__exit__(*exc)
        def writelines(self, lines):
            for line in lines:
                self.f.write(line)
                self.lines += 1
                if self.lines == 2_000:
                    self.f.flush()
                    halt()
    os.fdopen = lambda *a, **k: HalfWay(fdopen(*a, **k))
else:
    replace = os.replace
    os.replace = lambda *a: (halt(), replace(*a))
run_queries(out, [], lambda q: {})
"""


@pytest.mark.parametrize("point", ["writing", "renaming"])
def test_kill_9_during_the_resume_rewrite_loses_no_finished_query(tmp_path, point):
    """The resume rewrite goes to a temporary file replaced in one step: a process killed inside it
    (halfway through the new file, or just before the rename) leaves every finished query in
    rankings.jsonl. (Written in place, the "writing" kill loses records.)"""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from lensgraph.pipeline.evaluation.runfiles import read_records

    out = tmp_path / "run"
    out.mkdir()
    n = 5_000
    body = "".join(json.dumps({"id": str(i), "rankings": {"retrieve": [str(j) for j in range(40)]}}) + "\n" for i in range(n))
    (out / "rankings.jsonl").write_text(body + '{"id": "torn", "rank')  # and a line torn by an earlier kill
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", HALT_REWRITE, str(out), point], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "halted"  # inside the rewrite, at the point named
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(read_records(out)) == n
    assert (out / "rankings.jsonl").read_text().endswith("rank")  # the rewrite never landed
    subprocess.run([sys.executable, "-c", HALT_REWRITE.split("out, point")[0] + "run_queries(Path(sys.argv[1]), [], lambda q: {})",
                    str(out)], cwd=root, check=True)
    assert len(read_records(out)) == n and not (out / "rankings.jsonl").read_text().endswith("rank")  # torn line gone
    assert [p.name for p in out.iterdir()] == ["rankings.jsonl"]  # the killed rewrite's temporary file is cleared
