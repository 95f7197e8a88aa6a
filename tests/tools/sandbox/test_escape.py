"""The escape suite: every attempt to reach past the sandbox is blocked, each with its own specific failure."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhost.tools.sandbox import Sandbox
from tests.tools.sandbox.helpers import make_sandbox, needs_bwrap, run

# Each attempt prints "<ExceptionName> <errno>" or "ok <value>" as one JSON line.
PRELUDE = """
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def attempt(fn):
    try:
        return "ok " + repr(fn())[:200]
    except BaseException as exc:
        return f"{type(exc).__name__} {getattr(exc, 'errno', '')}".strip()
def libc_call(name, *args):
    if getattr(libc, name)(*args) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return 0
"""

pytestmark = needs_bwrap


def probe_inside(sandbox: Sandbox, body: str, **kwargs: object) -> object:
    result = run(sandbox, PRELUDE + body, **kwargs)  # type: ignore[arg-type]
    assert result.ok, result.summary()
    return json.loads(result.stdout)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that counts the connections it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    yield server.getsockname()[1]
    with pytest.raises(TimeoutError):
        server.accept()  # nothing ever reached it
    server.close()


def test_no_tcp_to_the_hosts_loopback(sandbox: Sandbox, listener: int) -> None:
    body = f"print(json.dumps(attempt(lambda: socket.create_connection(('127.0.0.1', {listener}), timeout=2))))"
    assert probe_inside(sandbox, body) == "PermissionError 1"  # seccomp refuses AF_INET sockets


def test_no_network_outside(sandbox: Sandbox) -> None:
    body = (
        "print(json.dumps([attempt(lambda: socket.create_connection(('1.1.1.1', 53), timeout=2)),"
        " attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))]))"
    )
    assert probe_inside(sandbox, body) == ["PermissionError 1", "PermissionError 1"]


def test_no_dns(sandbox: Sandbox) -> None:
    body = "print(json.dumps(attempt(lambda: socket.getaddrinfo('pypi.org', 443))))"
    assert (
        probe_inside(sandbox, body) == f"gaierror {socket.EAI_AGAIN}"
    )  # no resolver reachable: no /etc/resolv.conf, no AF_INET


def test_no_raw_or_netlink_sockets(sandbox: Sandbox) -> None:
    body = (
        "print(json.dumps([attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),"
        " attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))]))"
    )
    assert probe_inside(sandbox, body) == ["PermissionError 1", "PermissionError 1"]


def test_no_abstract_unix_socket_of_the_host(sandbox: Sandbox) -> None:
    name = f"\0qhsbx-{uuid.uuid4().hex}"
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host.bind(name)
    host.listen()
    accepted: list[object] = []
    host.settimeout(3)
    waiter = threading.Thread(target=lambda: accepted.append(_accept_or_none(host)))
    waiter.start()
    body = (
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"print(json.dumps(attempt(lambda: s.connect({name!r}))))"
    )
    try:
        assert probe_inside(sandbox, body) == "ConnectionRefusedError 111"  # abstract names are per network namespace
    finally:
        waiter.join()
        host.close()
    assert accepted == [None]


def _accept_or_none(sock: socket.socket) -> object:
    try:
        return sock.accept()
    except TimeoutError:
        return None


def test_no_host_files(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret")
    secret.chmod(0o644)
    body = (
        "print(json.dumps([attempt(lambda: open(p).read()) for p in "
        f"({str(secret)!r}, '/etc/shadow', '/etc/passwd', '/root/.bashrc', '/var/run/docker.sock')]"
        " + [attempt(lambda: os.listdir(p)) for p in ('/home', '/sys', '/etc')]))"
    )
    assert probe_inside(sandbox, body) == ["FileNotFoundError 2"] * 7 + ["ok ['alternatives']"]


def test_no_environment_of_the_server(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENHOST_TEST_SECRET", "sk-should-not-leak")
    body = (
        "envs = {}\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        envs[pid] = attempt(lambda: open(f'/proc/{pid}/environ', 'rb').read().decode())\n"
        f"print(json.dumps([envs, attempt(lambda: open('/proc/{os.getpid()}/environ').read()), dict(os.environ)]))"
    )
    envs, server, own = probe_inside(sandbox, body)  # type: ignore[misc]
    assert "sk-should-not-leak" not in json.dumps([envs, server, own])
    assert envs["1"] == "ok 'PATH=/usr/sbin:/usr/bin:/sbin:/bin\\x00'"  # bwrap's reaper: the /proc/1/environ trap
    assert server == "FileNotFoundError 2"  # the server's PID does not exist in the sandbox's PID namespace
    assert "QWENHOST_TEST_SECRET" not in own and own["HOME"] == "/job"


def test_no_writes_outside_the_job_dir(sandbox: Sandbox) -> None:
    body = (
        "def write(p):\n    open(p, 'w').write('x')\n    return p\n"
        "print(json.dumps([attempt(lambda: write(p)) for p in "
        "('/usr/qhsbx', '/qhsbx', '/etc/qhsbx', '/proc/sys/kernel/hostname', '/job/ok', '/tmp/ok')]))"
    )
    assert probe_inside(sandbox, body) == [
        "OSError 30",  # EROFS: the root, /usr and /etc are read-only
        "OSError 30",
        "OSError 30",
        "PermissionError 13",  # /proc/sys belongs to the host's root
        "ok '/job/ok'",
        "ok '/tmp/ok'",
    ]
    assert not Path("/usr/qhsbx").exists() and not Path("/qhsbx").exists()


def test_no_unbounded_tmpfs(sandbox: Sandbox) -> None:
    body = (
        "def fill(d):\n    for i in range(8):\n        open(f'{d}/f{i}', 'wb').write(b'x' * (10 * 2**20))\n"
        "print(json.dumps([attempt(lambda: open('/dev/x', 'wb')), attempt(lambda: fill('/dev/shm')),"
        " attempt(lambda: fill('/tmp')), attempt(lambda: open('/job/big', 'wb').write(b'x' * 17 * 2**20))]))"
    )
    # /dev read-only; /dev/shm and /tmp capped at 16 MiB (ENOSPC); one file at most 16 MiB (EFBIG)
    assert probe_inside(sandbox, body) == ["OSError 30", "OSError 28", "OSError 28", "OSError 27"]


def test_no_signals_or_devices_of_the_host(sandbox: Sandbox) -> None:
    body = (
        f"print(json.dumps([attempt(lambda: os.kill({os.getpid()}, 15)),"
        " attempt(lambda: open('/dev/sda', 'rb')), attempt(lambda: open('/dev/mem', 'rb'))]))"
    )
    assert probe_inside(sandbox, body) == ["ProcessLookupError 3", "FileNotFoundError 2", "FileNotFoundError 2"]


def test_fork_bomb_is_bounded(sandbox: Sandbox) -> None:
    body = (
        "import time\nforked, failure = 0, None\n"
        "for _ in range(200):\n"
        "    try:\n        pid = os.fork()\n    except OSError as exc:\n        failure = exc.errno\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    forked += 1\n"
        "print(json.dumps([forked, failure]))"
    )
    forked, failure = probe_inside(sandbox, body)  # type: ignore[misc]
    assert failure == 11  # EAGAIN from RLIMIT_NPROC on the pool uid
    assert 0 < forked < sandbox.config.max_processes


def test_memory_exhaustion_is_refused(sandbox: Sandbox) -> None:
    body = "print(json.dumps(attempt(lambda: len(bytearray(2 * 1024**3)))))"
    assert probe_inside(sandbox, body) == "MemoryError"  # RLIMIT_AS


def test_cpu_spin_is_killed_by_the_cpu_limit(sandbox: Sandbox) -> None:
    result = run(sandbox, "while True: pass")
    assert (result.exit_status, result.stopped) == (128 + 24, None)  # SIGXCPU at RLIMIT_CPU
    assert result.status_line() == "stopped: the CPU time limit of 2 s was reached"


def test_sleeping_is_killed_by_the_wall_clock(sandbox: Sandbox) -> None:
    result = run(sandbox, "import time\nprint('before', flush=True)\ntime.sleep(100)", timeout_s=1.5)
    assert (result.stopped, result.stdout) == ("wall-clock", "before\n")
    assert 1.5 <= result.duration_s < 6
    assert result.summary().endswith("stopped: the wall-clock limit of 1.5 s was reached")


def test_output_flood_is_capped_and_the_server_stays_small() -> None:
    sandbox = make_sandbox(output_cap_bytes=4096)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n    sys.stderr.write('y' * 65536)"
    result = asyncio.run(sandbox.run(code))
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert result.stopped == "output-cap" and result.stdout_truncated
    assert len(result.stdout) == 4096 and len(result.stderr) <= 4096
    assert result.duration_s < 5 and grew_kib < 64 * 1024
    assert "[stdout truncated at 4096 bytes]" in result.summary()


def test_no_ptrace(sandbox: Sandbox) -> None:
    body = (
        "print(json.dumps([attempt(lambda: libc_call('ptrace', 0, 0, 0, 0)),"
        " attempt(lambda: libc_call('ptrace', 16, 1, 0, 0))]))"
    )
    assert probe_inside(sandbox, body) == [
        "PermissionError 1",
        "PermissionError 1",
    ]  # PTRACE_TRACEME, PTRACE_ATTACH to PID 1


def test_no_new_namespaces(sandbox: Sandbox) -> None:
    body = (
        "print(json.dumps([attempt(lambda: libc_call('unshare', flag)) for flag in (0x10000000, 0x40000000, 0x20000)]))"
    )
    assert probe_inside(sandbox, body) == ["PermissionError 1"] * 3  # NEWUSER, NEWNET, NEWNS


def test_no_mount(sandbox: Sandbox) -> None:
    body = (
        "os.mkdir('/job/m')\n"
        "print(json.dumps([attempt(lambda: libc_call('mount', b'none', b'/job/m', b'tmpfs', 0, None)),"
        " attempt(lambda: libc_call('umount2', b'/proc', 2))]))"
    )
    assert probe_inside(sandbox, body) == ["PermissionError 1", "PermissionError 1"]


def test_no_privilege_tricks(sandbox: Sandbox) -> None:
    body = (
        "import subprocess\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "su = subprocess.run(['su', '-c', 'id'], capture_output=True, stdin=subprocess.DEVNULL)\n"
        "print(json.dumps([attempt(lambda: os.setuid(0)), status['NoNewPrivs'], status['CapEff'], su.returncode != 0,"
        " os.getuid()]))"
    )
    assert probe_inside(sandbox, body) == [
        "OSError 22",
        "1",
        "0000000000000000",
        True,
        1000,
    ]  # uid 0 is not even mapped


def test_concurrent_jobs_cannot_see_each_other() -> None:
    sandbox = make_sandbox(concurrency=2)
    writer = (
        "import time\nopen('/job/mine', 'w').write('a')\nopen('/tmp/mine', 'w').write('a')\n"
        "time.sleep(4)\nprint('done')"
    )
    looker = (
        "import os, time\ntime.sleep(1.5)\n"
        "print(sorted(os.listdir('/job')), sorted(os.listdir('/tmp')),"
        " sorted(p for p in os.listdir('/proc') if p.isdigit()))"
    )

    async def both() -> list[str]:
        results = await asyncio.gather(sandbox.run(writer), sandbox.run(looker))
        return [r.stdout for r in results]

    wrote, looked = asyncio.run(both())
    assert wrote == "done\n"
    assert looked == "[] [] ['1', '2']\n"  # its own empty dirs, and only its own PID namespace
