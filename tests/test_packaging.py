"""`pip install .` installs one top-level name, `lensgraph`, and the installed package works alone:
the CLI starts, prompt sets and templates load as package data (not from this checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # no build isolation: the venv's setuptools builds it, so no index is needed
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob("lensgraph-*.whl"))


def test_the_wheel_claims_no_generic_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"lensgraph", wheel.name.split("-py3")[0] + ".dist-info"}
    for expected in ("lensgraph/run.py", "lensgraph/pipeline/store/index.py", "lensgraph/prompts/default/reason.txt",
                     "lensgraph/prompts/default/reason.schema.json", "lensgraph/adapters/cli/templates/report.html",
                     "lensgraph/adapters/web/templates/index.html"):
        assert expected in names
    assert not [n for n in names if n.startswith(("lensgraph/tests/", "lensgraph/bench/"))]


def test_the_installed_package_runs_without_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    assert [p.name for p in target.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"] == ["lensgraph"]
    # -S: no site-packages .pth files, so the editable install of this checkout is out of the way; the
    # dependencies come from this venv's site-packages, after the installed wheel
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    code = ("import lensgraph.run as run, lensgraph.pipeline.models.prompts as p, lensgraph.adapters.cli.report as r\n"
            f"assert run.__file__.startswith({str(target)!r}), run.__file__\n"
            "assert p.load_prompt_set('imagescope').prompts['reason'].source.startswith(" + repr(str(target)) + ")\n"
            "assert (r.TEMPLATE_DIR / 'report.html').is_file()\n"
            "run.main()\n")
    done = subprocess.run([sys.executable, "-S", "-c", code, "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage:" in done.stdout and "search" in done.stdout and "serve" in done.stdout
