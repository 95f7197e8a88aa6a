"""The CPU probe reads cpuinfo flags; on a CPU without AMX nothing is probed and repacking stays on."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhost.engine.llamacpp import cpu_probe


def test_flags_are_read_from_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_tile amx_int8\nbugs\t: spectre\n")
    assert {"avx2", "amx_tile"} <= cpu_probe.cpu_flags(info)
    assert cpu_probe.cpu_flags(tmp_path / "missing") == frozenset()


def test_without_amx_nothing_is_probed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cpu_probe, "cpu_flags", lambda *a: frozenset({"avx2"}))
    # A path that cannot load: with AMX advertised the child would fail; without, it is never started.
    assert cpu_probe.extra_buffers_work.__wrapped__(str(tmp_path / "no-such.gguf")) is True
