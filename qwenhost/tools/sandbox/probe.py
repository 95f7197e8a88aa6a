"""Start-up detection: can this host run the sandbox? Never a fallback to running code unsandboxed."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

from qwenhost.tools.sandbox.config import SandboxConfig
from qwenhost.tools.sandbox.layout import OUTER_ENV, Layout, LayoutError, command, resolve_layout
from qwenhost.tools.sandbox.runner import Sandbox
from qwenhost.tools.sandbox.seccomp import SeccompUnavailable, build_filter_bpf

# Run inside at start-up: proves the namespaces, the uid switch, seccomp and the required modules.
SMOKE = """
import os, socket, sys
assert os.getuid() == 1000, os.getuid()
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sys.exit("seccomp is not in force: an AF_INET socket was created")
except PermissionError:
    pass
for name in MODULES:
    __import__(name)
print("sandbox-ok")
"""


class SandboxUnavailable(Exception):
    """Why the code interpreter cannot run on this host (the text the server's 400 carries)."""


def prepare_sandbox(config: SandboxConfig) -> Sandbox:
    """Resolve programs, interpreter and filter; raise SandboxUnavailable saying what is missing."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"the sandbox needs Linux (bubblewrap); this is {sys.platform}")
    if os.geteuid() != 0:
        last = config.slot_uid(config.concurrency - 1)
        raise SandboxUnavailable(
            f"the sandbox runs each program as a uid of its pool ({config.uid_start}-{last}) and switching "
            f"to it needs root; the server runs as uid {os.geteuid()}"
        )
    for slot in range(config.concurrency):
        try:
            owner = pwd.getpwuid(config.slot_uid(slot)).pw_name
        except KeyError:
            continue
        raise SandboxUnavailable(
            f"uid {config.slot_uid(slot)} of the sandbox pool belongs to the user {owner}: "
            "set [code_interpreter] uid_start to a range no account uses"
        )
    try:
        layout = resolve_layout(config)
        bpf = build_filter_bpf()
    except (LayoutError, SeccompUnavailable) as exc:
        raise SandboxUnavailable(str(exc)) from exc
    return Sandbox(config, layout, bpf)


def probe(config: SandboxConfig | None = None) -> str | None:
    """None when a real sandboxed run works here; otherwise the reason, for the start-up log and the 400."""
    config = config or SandboxConfig()
    try:
        sandbox = prepare_sandbox(config)
    except SandboxUnavailable as exc:
        return str(exc)
    return try_run(sandbox)


def try_run(sandbox: Sandbox) -> str | None:
    """One synchronous run in a prepared sandbox (the server's event loop may not be running yet): None when
    it works, else the reason."""
    return _smoke(sandbox.config, sandbox.layout, sandbox.seccomp_bpf)


def _smoke(config: SandboxConfig, layout: Layout, bpf: bytes) -> str | None:
    code = SMOKE.replace("MODULES", repr(config.required_modules))
    bpf_fd = os.memfd_create("qwenhost-seccomp", 0)
    try:
        os.write(bpf_fd, bpf)
        os.lseek(bpf_fd, 0, os.SEEK_SET)
        argv = command(config, layout, uid=config.slot_uid(0), seccomp_fd=bpf_fd)
        done = subprocess.run(
            argv, input=code.encode(), capture_output=True, env=OUTER_ENV, pass_fds=(bpf_fd,), timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the sandbox could not start: {exc}"
    finally:
        os.close(bpf_fd)
    if done.returncode == 0 and done.stdout.strip() == b"sandbox-ok":
        return None
    detail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
    return f"a test run in the sandbox failed (status {done.returncode}): {detail[-1] if detail else 'no output'}"
