"""The sandbox's limits: one frozen value the server builds from its [code_interpreter] section."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Every limit a code run is held to (docs/code-interpreter.md explains each)."""

    python: str = ""  # interpreter run inside; "" = the server's own (sys.executable), bound read-only
    bwrap: str = "bwrap"  # bubblewrap binary (a name looked up on PATH, or a path)
    wall_timeout_s: float = 15.0  # the parent kills the whole sandbox after this (a caller may ask for less)
    cpu_seconds: int = 5  # RLIMIT_CPU of each process: SIGXCPU at this, SIGKILL one second later
    memory_bytes: int = 512 * MIB  # RLIMIT_AS of each process
    max_processes: int = 16  # RLIMIT_NPROC of the job's host uid: processes and threads together
    file_size_bytes: int = 16 * MIB  # RLIMIT_FSIZE: the largest file the code may write
    open_files: int = 128  # RLIMIT_NOFILE
    job_dir_bytes: int = 64 * MIB  # size of the tmpfs at /job (the working directory)
    tmp_bytes: int = 16 * MIB  # size of the tmpfs at /tmp
    output_cap_bytes: int = 16 * 1024  # stdout and stderr are each kept up to this; past it the run is stopped
    max_code_bytes: int = 64 * 1024  # a longer program is refused without running
    concurrency: int = 2  # sandboxes running at once; further runs wait
    queue_timeout_s: float = 30.0  # how long a run waits for a free sandbox before it is refused
    uid_start: int = 600000  # first host uid of the pool; job slot i runs as uid_start + i
    uid_count: int = 64  # size of the uid range reserved for the pool (must cover concurrency)
    required_modules: tuple[str, ...] = ("numpy", "sympy")  # the start-up probe imports these inside

    def __post_init__(self) -> None:
        positive = {
            "wall_timeout_s": self.wall_timeout_s,
            "cpu_seconds": self.cpu_seconds,
            "memory_bytes": self.memory_bytes,
            "max_processes": self.max_processes,
            "file_size_bytes": self.file_size_bytes,
            "open_files": self.open_files,
            "job_dir_bytes": self.job_dir_bytes,
            "tmp_bytes": self.tmp_bytes,
            "output_cap_bytes": self.output_cap_bytes,
            "max_code_bytes": self.max_code_bytes,
            "concurrency": self.concurrency,
            "queue_timeout_s": self.queue_timeout_s,
            "uid_count": self.uid_count,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ValueError(f"code_interpreter.{key} must be positive, got {value}")
        if self.uid_start < 1000:
            raise ValueError(
                f"code_interpreter.uid_start must be at least 1000 (not a system uid), got {self.uid_start}"
            )
        if self.concurrency > self.uid_count:
            raise ValueError(
                f"code_interpreter.concurrency ({self.concurrency}) exceeds the uid pool "
                f"(uid_count {self.uid_count}): every running sandbox needs its own uid"
            )
        if self.max_processes < 4:
            raise ValueError("code_interpreter.max_processes must be at least 4 (bwrap itself needs 2 and Python 1)")

    def slot_uid(self, slot: int) -> int:
        """The host uid of the pool slot ``slot``."""
        return self.uid_start + slot
