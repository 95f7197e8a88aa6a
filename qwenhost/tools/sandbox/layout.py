"""What the sandbox sees and how it is started: the interpreter's read-only binds and the command line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qwenhost.tools.sandbox.config import SandboxConfig

SANDBOX_UID = 1000  # the uid the code sees inside its user namespace; the host uid comes from the pool
OUTER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # bwrap's own environment: /proc/1/environ shows it
INNER_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/job",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",  # threads count against the process limit and the address space
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}
_TOP_LEVEL = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")  # merged-/usr symlinks, or real dirs elsewhere
_PREFIXES = "import sys, json; print(json.dumps([sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix]))"


class LayoutError(Exception):
    """The sandbox cannot be laid out on this host; the message says why."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Host programs and paths, resolved once when the sandbox is prepared."""

    setpriv: str
    prlimit: str
    bwrap: str
    python: str  # the interpreter's path, the same inside and outside
    binds: tuple[str, ...]  # directories bound read-only at their own path, besides /usr


def resolve_layout(config: SandboxConfig) -> Layout:
    """Find the programs and the interpreter's directories; refuse what the pool uids could not read."""
    tools = {name: shutil.which(name) for name in ("setpriv", "prlimit")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise LayoutError(f"{' and '.join(missing)} not found (Debian package util-linux)")
    bwrap = shutil.which(config.bwrap)
    if bwrap is None:
        raise LayoutError(f"bubblewrap ({config.bwrap}) is not installed: apt-get install bubblewrap")
    python, prefixes = _interpreter(config.python or _server_python())
    binds = sorted({p for p in prefixes if not _under(p, "/usr")})
    for path in [python, *binds]:
        _require_readable_by_others(path)
    return Layout(str(tools["setpriv"]), str(tools["prlimit"]), bwrap, python, tuple(binds))


def _server_python() -> str:
    import sys

    return sys.executable


def _interpreter(python: str) -> tuple[str, list[str]]:
    try:
        done = subprocess.run(
            [python, "-I", "-c", _PREFIXES], env=OUTER_ENV, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LayoutError(f"the interpreter {python} cannot run: {exc}") from exc
    if done.returncode != 0:
        raise LayoutError(f"the interpreter {python} failed: {done.stderr.strip()[-300:]}")
    executable, *prefixes = json.loads(done.stdout)
    return os.path.abspath(executable), [os.path.realpath(p) for p in prefixes]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _require_readable_by_others(path: str) -> None:
    """bwrap runs as a pool uid, so every directory above a bind must be searchable by anyone."""
    target = Path(path)
    for parent in reversed(target.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise LayoutError(
                f"the sandbox's uids cannot reach {path}: {parent} is mode {stat.filemode(mode)}; "
                "set [code_interpreter] python to an interpreter outside it, e.g. /usr/bin/python3 "
                "(Debian: apt-get install python3-numpy python3-sympy)"
            )
    if not target.stat().st_mode & stat.S_IROTH:
        raise LayoutError(f"the sandbox's uids cannot read {path}")


def command(config: SandboxConfig, layout: Layout, *, uid: int, seccomp_fd: int) -> list[str]:
    """The whole chain: drop to the pool uid, set rlimits, then bwrap runs ``python -I -B -`` (code on stdin)."""
    drop = [layout.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
    drop += ["--inh-caps=-all", "--bounding-set=-all"]  # no capability survives into bwrap
    limits = [
        layout.prlimit,
        f"--cpu={config.cpu_seconds}:{config.cpu_seconds + 1}",
        f"--as={config.memory_bytes}",
        f"--nproc={config.max_processes}",
        f"--fsize={config.file_size_bytes}",
        f"--nofile={config.open_files}",
        "--core=0",
        "--",
    ]
    return [*drop, *limits, layout.bwrap, *_bwrap_args(config, layout, seccomp_fd), layout.python, "-I", "-B", "-"]


def _bwrap_args(config: SandboxConfig, layout: Layout, seccomp_fd: int) -> list[str]:
    args = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    args += ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_LEVEL:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    if Path("/etc/alternatives").is_dir():  # Debian's libblas.so.3 and friends are symlinks through here
        args += ["--ro-bind", "/etc/alternatives", "/etc/alternatives"]
    for path in layout.binds:
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # bwrap's /dev is a tmpfs of half the host's RAM: cap /dev/shm and make the rest of /dev read-only.
    args += ["--size", str(config.tmp_bytes), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--size", str(config.tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--size", str(config.job_dir_bytes), "--tmpfs", "/job", "--chdir", "/job"]
    args += ["--remount-ro", "/", "--clearenv"]
    for key, value in INNER_ENV.items():
        args += ["--setenv", key, value]
    return [*args, "--seccomp", str(seccomp_fd), "--"]
