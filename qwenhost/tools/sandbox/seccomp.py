"""The seccomp filter every sandboxed process runs under, compiled to BPF for ``bwrap --seccomp FD``."""

from __future__ import annotations

import errno
import socket
import tempfile
from typing import Any

# Denied with EPERM. Debugging, namespaces and mounts, kernel keyrings, eBPF, perf, module and kexec
# loading, io_uring (a syscall-filter bypass surface), cross-process memory access, personality tricks.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "fanotify_init",
    "open_by_handle_at", "name_to_handle_at", "personality", "lookup_dcookie", "vhangup",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
)  # fmt: skip

# socket() families refused on top of the empty network namespace: IP of either version, netlink, raw packets.
DENIED_SOCKET_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET)

# clone() flags that make a namespace: refused so the code cannot build one of its own.
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


class SeccompUnavailable(Exception):
    """libseccomp (through pyseccomp) is missing or cannot compile the filter."""


def build_filter_bpf() -> bytes:
    """The filter as classic BPF, ready to be written to the fd bwrap reads."""
    try:
        import pyseccomp
    except ImportError as exc:  # the `code` extra brings it
        raise SeccompUnavailable(f"the Python package pyseccomp is not installed ({exc})") from exc
    try:
        flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        _add_rules(pyseccomp, flt)
        with tempfile.TemporaryFile() as out:
            flt.export_bpf(out)
            out.seek(0)
            return out.read()
    except (OSError, RuntimeError, ValueError) as exc:  # libseccomp.so.2 missing or a rule it rejects
        raise SeccompUnavailable(f"libseccomp could not build the filter: {exc}") from exc


def _add_rules(sc: Any, flt: Any) -> None:
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        flt.add_rule(deny, name)
    for family in DENIED_SOCKET_FAMILIES:
        flt.add_rule(deny, "socket", sc.Arg(0, sc.EQ, int(family)))
    for flag in CLONE_NAMESPACE_FLAGS:  # rules of one syscall are OR-ed: any namespace bit set is refused
        flt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes glibc fall back to clone().
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
