"""CPU time per thread of a server during one measurement: where each server spends its cores.

Threads are read from /proc/PID/task; the main thread (tid == pid) is marked, since it is qwenhost's
event loop (uvicorn) and llama-server's HTTP thread. llama.cpp's compute threads are the busiest ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(path: Path) -> list[str]:
    """The fields of a /proc/<pid>[/task/<tid>]/stat file after the command name (which may hold spaces):
    [11:15] are utime, stime, cutime, cstime in clock ticks."""
    return path.read_text().rsplit(")", 1)[1].split()


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{tid: (name, user + system CPU seconds)} for every live thread of ``pid``."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = stat_fields(task / "stat")
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended between listing and reading
            continue
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


class ThreadWindow:
    """Per-thread CPU used between construction and close(), busiest first."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = thread_cpu(pid)

    def close(self, top: int = 6) -> list[dict[str, Any]]:
        rows: list[tuple[str, float]] = []
        for tid, (name, cpu) in thread_cpu(self.pid).items():
            used = cpu - self._start.get(tid, (name, 0.0))[1]
            if used > 0:
                label = f"{name} (main)" if tid == self.pid else name
                rows.append((label, round(used, 2)))
        rows.sort(key=lambda r: -r[1])
        return [{"thread": label, "cpu_s": used} for label, used in rows[:top]]
