"""Runs one program in a sandbox: a bounded pool of uid slots, the wall clock, the output caps, the reaping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from qwenhost.core.errors import Throttled
from qwenhost.tools.sandbox.config import SandboxConfig
from qwenhost.tools.sandbox.layout import OUTER_ENV, Layout, command
from qwenhost.tools.sandbox.output import CappedReader, SandboxResult

log = logging.getLogger("qwenhost.tools.sandbox")

KILL_GRACE_S = 5.0  # after SIGKILL, how long the pipes and the pool uid may take to empty


class CodeTooLong(ValueError):
    """The program is larger than ``max_code_bytes``; it is not run."""


class Sandbox:
    """Prepared once (layout and seccomp filter resolved); runs programs, ``concurrency`` at a time.

    Belongs to one event loop (the server's): its pool is an asyncio queue.
    """

    def __init__(self, config: SandboxConfig, layout: Layout, seccomp_bpf: bytes) -> None:
        self.config = config
        self.layout = layout
        self.seccomp_bpf = seccomp_bpf
        self._slots: asyncio.Queue[int] = asyncio.Queue(maxsize=config.concurrency)
        for slot in range(config.concurrency):
            self._slots.put_nowait(slot)

    async def run(self, code: str, *, timeout_s: float | None = None) -> SandboxResult:
        """Run ``code`` with ``python -I -B -``. Cancelling kills the sandbox and reaps it before returning."""
        data = code.encode("utf-8", errors="surrogatepass")
        if len(data) > self.config.max_code_bytes:
            raise CodeTooLong(f"the program is {len(data)} bytes; the limit is {self.config.max_code_bytes}")
        wall = self.config.wall_timeout_s if timeout_s is None else min(timeout_s, self.config.wall_timeout_s)
        slot = await self._acquire()
        uid = self.config.slot_uid(slot)
        proc: asyncio.subprocess.Process | None = None
        readers: list[asyncio.Task[None]] = []
        try:
            proc = await self._spawn(uid)
            return await self._collect(proc, data, wall, readers)
        finally:
            # Shielded: a second cancellation must not leave the uid's processes behind with its slot free.
            await asyncio.shield(self._finish(proc, readers, slot, uid))

    async def _acquire(self) -> int:
        try:
            async with asyncio.timeout(self.config.queue_timeout_s):
                return await self._slots.get()
        except TimeoutError:
            raise Throttled(
                f"The code interpreter is busy: all {self.config.concurrency} sandboxes stayed in use "
                f"for {self.config.queue_timeout_s:g} s."
            ) from None

    async def _spawn(self, uid: int) -> asyncio.subprocess.Process:
        bpf_fd = os.memfd_create("qwenhost-seccomp", 0)  # not inheritable: pass_fds alone hands it to bwrap
        try:
            os.write(bpf_fd, self.seccomp_bpf)
            os.lseek(bpf_fd, 0, os.SEEK_SET)
            argv = command(self.config, self.layout, uid=uid, seccomp_fd=bpf_fd)
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=OUTER_ENV,  # the /proc/1/environ trap: bwrap's reaper keeps this environment
                pass_fds=(bpf_fd,),
                start_new_session=True,  # its own process group, killed as one
                cwd="/",
            )
        finally:
            os.close(bpf_fd)

    async def _collect(
        self, proc: asyncio.subprocess.Process, data: bytes, wall: float, readers: list[asyncio.Task[None]]
    ) -> SandboxResult:
        started = time.monotonic()
        stopped: list[str] = []

        def stop(reason: str) -> None:
            if not stopped:
                stopped.append(reason)
            _kill_group(proc)

        assert proc.stdout is not None and proc.stderr is not None
        cap = self.config.output_cap_bytes
        out = CappedReader(proc.stdout, cap, lambda: stop("output-cap"))
        err = CappedReader(proc.stderr, cap, lambda: stop("output-cap"))
        readers += [asyncio.ensure_future(out.drain()), asyncio.ensure_future(err.drain())]
        feeder = asyncio.ensure_future(_feed(proc, data))
        _, pending = await asyncio.wait([*readers, feeder], timeout=wall)
        if pending:
            stop("wall-clock")
            await asyncio.wait(pending, timeout=KILL_GRACE_S)
        feeder.cancel()
        status = await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        return SandboxResult(
            stdout=out.text(),
            stderr=err.text(),
            exit_status=status if status >= 0 else 128 - status,
            stopped=stopped[0] if stopped else None,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            duration_s=time.monotonic() - started,
            cpu_seconds=self.config.cpu_seconds,
            wall_timeout_s=wall,
            output_cap_bytes=cap,
        )

    async def _finish(
        self, proc: asyncio.subprocess.Process | None, readers: list[asyncio.Task[None]], slot: int, uid: int
    ) -> None:
        """Kill what is left, drain the pipes, reap, and give the slot back once its uid owns no process."""
        if proc is not None:
            if proc.returncode is None:
                _kill_group(proc)
            if readers:
                await asyncio.wait(readers, timeout=KILL_GRACE_S)
            for task in readers:
                task.cancel()
            try:
                await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
            except TimeoutError:
                log.error("sandbox pid %d did not exit after SIGKILL", proc.pid)
        if await _uid_empty(uid, KILL_GRACE_S):
            self._slots.put_nowait(slot)
        else:  # never hand a uid with live processes to the next job: the pool shrinks, loudly
            log.error("sandbox uid %d still owns processes after SIGKILL; its slot is withdrawn", uid)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program ended (or was stopped) before reading all of itself; its status says why


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL bwrap's process group; its PID 1 dies with it and takes the whole PID namespace along."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def uid_processes(uid: int) -> list[int]:
    """PIDs whose real uid is ``uid`` (reads /proc; the sandboxes' processes are visible to the host)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # exited while we looked
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if int(line.split()[1]) == uid:
                    pids.append(int(entry.name))
                break
    return pids


async def _uid_empty(uid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while uid_processes(uid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
