"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import resource
import time


class OtherCpu:
    """CPU used by *other* processes while a block runs, in cores (from /proc/stat minus our own
    and our waited-for children's rusage). Near 0 means the timing had the machine to itself."""

    @staticmethod
    def _snap() -> tuple[float, float, float]:
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:9]]
            busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            busy = float("nan")
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            own += ru.ru_utime + ru.ru_stime
        return time.monotonic(), busy, own

    def start(self) -> "OtherCpu":
        self._start = self._snap()
        self.cores = float("nan")
        return self

    def stop(self) -> float:
        t1, busy1, own1 = self._snap()
        t0, busy0, own0 = self._start
        self.cores = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9)
        return self.cores

    def __enter__(self) -> "OtherCpu":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
