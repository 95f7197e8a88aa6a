"""What every bench script shares: the two servers on loopback, CPU/RSS monitors, machine facts, output."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.threads import CLK_TCK, ThreadWindow, stat_fields
from tests.support.server import stop, wait_healthy  # the same start-up wait and stop as the test servers

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
PARALLEL = 8
CONTEXT_PER_SLOT = 4096
# Identical sampling for both servers as far as their APIs allow. qwenhost's DashScope defaults
# (top_p 0.8, top_k 20, repetition_penalty 1.05) differ from llama-server's (top_k 40, top_p 0.95,
# min_p 0.05), so every request states them: fields one server does not know, the other ignores.
SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
EXTRA_BODY = {"repetition_penalty": 1.0, "repeat_penalty": 1.0, "min_p": 0.0}


def embedded_model_path() -> str:
    from qwenhost.config import embedded_model_path as path

    return path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One server process under test. ``base_url`` is what ``qwenhost bench`` talks to."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    base_url: str
    health_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process and its reaped children."""
    return sum(int(x) for x in stat_fields(Path(f"/proc/{pid}/stat"))[11:15]) / CLK_TCK


@contextlib.contextmanager
def serve(name: str, cmd: Sequence[str], port: int, prefix: str, log_dir: Path) -> Iterator[Server]:
    log_path = log_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    root = f"http://127.0.0.1:{port}"
    server = Server(name, process, port, f"{root}{prefix}", f"{root}/health", log_path)
    try:
        wait_healthy(process, server.health_url, log_path, 300)
        yield server
    finally:
        stop(process)


def qwenhost_cmd(port: int, parallel: int, context: int, threads: int, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "qwenhost", "serve", "--port", str(port), "--parallel", str(parallel),
        "--context-length", str(context), "--threads", str(threads), *extra,
    ]  # fmt: skip


def llama_server_cmd(
    binary: str, port: int, parallel: int, context: int, threads: int, extra: Sequence[str] = ()
) -> list[str]:
    # -c is the whole KV cache, split between the -np slots: each slot gets the same context as
    # a qwenhost sequence. --jinja: the GGUF's own chat template, as qwenhost uses it.
    return [
        binary, "-m", embedded_model_path(), "--host", "127.0.0.1", "--port", str(port),
        "-t", str(threads), "-tb", str(threads), "-np", str(parallel), "-c", str(context * parallel),
        "--jinja", "--no-webui", *repack_args(), *extra,
    ]  # fmt: skip


def repack_args() -> list[str]:
    """llama-server's --no-repack where qwenhost turns repacking off too (cpu_probe): the same kernels."""
    from qwenhost.engine.llamacpp.cpu_probe import extra_buffers_work

    return [] if extra_buffers_work(embedded_model_path()) else ["--no-repack"]


@contextlib.contextmanager
def side_by_side(args: argparse.Namespace) -> Iterator[tuple[Server, Server, Quiet, dict[str, Any]]]:
    """qwenhost and llama-server started together with the shared settings, the Quiet guard watching
    both, and the results dict (machine, arguments, command lines) that the script fills in."""
    binary = find_binary(args.llama_bin, "llama-server")
    quiet = quiet_from(args)
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "runs": []}
    logs = log_dir()
    with (
        qwenhost_server(logs, PARALLEL, CONTEXT_PER_SLOT, THREADS, args.qwenhost_arg) as ours,
        llama_server(binary, logs, PARALLEL, CONTEXT_PER_SLOT, THREADS, args.peer_arg) as peer,
    ):
        results["commands"] = [ours.process.args, peer.process.args]
        quiet.pids = [ours.pid, peer.pid]
        yield ours, peer, quiet, results


@contextlib.contextmanager
def qwenhost_server(
    log_dir: Path, parallel: int, context: int, threads: int, extra: Sequence[str] = ()
) -> Iterator[Server]:
    port = free_port()
    cmd = qwenhost_cmd(port, parallel, context, threads, extra)
    with serve("qwenhost", cmd, port, "/compatible-mode/v1", log_dir) as s:
        yield s


@contextlib.contextmanager
def llama_server(
    binary: str, log_dir: Path, parallel: int, context: int, threads: int, extra: Sequence[str] = ()
) -> Iterator[Server]:
    port = free_port()
    cmd = llama_server_cmd(binary, port, parallel, context, threads, extra)
    with serve("llama-server", cmd, port, "/v1", log_dir) as s:
        yield s


def find_binary(explicit: str | None, name: str) -> str:
    """--llama-bin DIR, else $LLAMA_CPP_BIN, else PATH. Never builds or downloads anything."""
    for directory in (explicit, os.environ.get("LLAMA_CPP_BIN")):
        if directory:
            path = Path(directory).expanduser() / name
            if path.is_file():
                return str(path)
            raise SystemExit(f"{name} not found in {directory} (see docs/performance.md: building the peer)")
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pass --llama-bin DIR or set LLAMA_CPP_BIN (docs/performance.md)")
    return found


# -- noise ------------------------------------------------------------------------------------------


def _cpu_busy_s() -> float:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def other_servers() -> list[str]:
    """Command lines of qwenhost/llama servers and pytest runs (call it while none of ours runs)."""
    mine = {os.getpid(), os.getppid()}
    names = ("qwenhost serve", "llama-server", "llama-batched-bench", "pytest")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if any(name in args for name in names):
                found.append(f"{proc.name} {args[:120]}")
    return found


@dataclass
class CpuWindow:
    """CPU used during a measurement by everyone, by our servers and this client: the rest is noise."""

    pids: Sequence[int]
    started: float = field(default_factory=time.perf_counter)
    busy0: float = field(default_factory=_cpu_busy_s)
    ours0: float = 0.0

    def __post_init__(self) -> None:
        self.ours0 = self._ours()

    def _ours(self) -> float:
        return sum(cpu_seconds(p) for p in (*self.pids, os.getpid()))

    def close(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        busy = _cpu_busy_s() - self.busy0
        ours = self._ours() - self.ours0
        return {
            "wall_s": wall,
            "cpu_all_cores": busy / wall,
            "cpu_ours_cores": ours / wall,
            "cpu_other_cores": max(0.0, (busy - ours) / wall),
            "loadavg_1m": os.getloadavg()[0],
        }


class RssSampler:
    """Samples a process's RSS every ``period_s`` on a thread: [(seconds since start, MiB)]."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.perf_counter() - self._t0, rss_mib(self.pid)))
            self._stop.wait(self.period_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- facts and output -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    import llama_cpp

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "simd": [f for f in ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni") if f in flags],
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "loadavg_at_start": os.getloadavg(),
        "other_servers_at_start": other_servers(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llama-bin", metavar="DIR", help="folder with llama-server etc. (default $LLAMA_CPP_BIN, PATH)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (default 3)")
    p.add_argument("--output", metavar="FILE", help="JSON results (default .bench/<script>-<time>.json)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=300.0,
        metavar="S",
        help="before each measurement, wait up to S seconds for other processes to stop using CPU (default 300)",
    )
    p.add_argument(
        "--qwenhost-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for qwenhost serve, repeatable (e.g. --qwenhost-arg=--kv-layout=unified)",
    )
    p.add_argument(
        "--peer-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for llama-server, repeatable (e.g. --peer-arg=-fa --peer-arg=off)",
    )
    p.add_argument("--retries", type=int, default=3, help="redo a measurement that others' CPU use spoiled (default 3)")


@dataclass
class Quiet:
    """The noise policy: wait for the other engineers' CPU use to stop, and redo a measurement it spoiled."""

    max_wait_s: float = 300.0
    retries: int = 3
    threshold_cores: float = 0.15  # CPU used by processes not ours, averaged over the measurement
    pids: list[int] = field(default_factory=list)  # our servers (their own CPU is not noise)

    def other_cores(self, seconds: float = 2.0) -> float:
        window = CpuWindow(self.pids)
        time.sleep(seconds)
        return window.close()["cpu_other_cores"]

    def wait(self) -> bool:
        """Wait up to max_wait_s for the machine to be quiet; False (and a warning) if it never was."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            other = self.other_cores()
            if other < self.threshold_cores:
                return True
            if time.monotonic() > deadline:
                print(f"warning: measuring while others use {other:.2f} cores", file=sys.stderr)
                return False
            time.sleep(5)


def output_path(explicit: str | None, script: str) -> Path:
    if explicit:
        return Path(explicit)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = REPO / ".bench" / f"{script}-{stamp}.json"  # .bench/ is git-ignored
    path.parent.mkdir(exist_ok=True)
    return path


def log_dir() -> Path:
    path = REPO / ".bench" / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_results(path: Path, results: dict[str, Any], markdown: str) -> None:
    path.write_text(json.dumps(results, indent=2, default=str), "utf-8")
    print(markdown)
    print(f"\nJSON: {path}")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def bench_config(server: Server, **overrides: Any) -> Any:
    """A ``qwenhost bench`` config with the shared sampling; overrides set the rest."""
    from qwenhost.ops.bench import BenchConfig

    values: dict[str, Any] = {"model": "qwen-plus", "warmup": 1, "extra_body": dict(EXTRA_BODY), **SAMPLING}
    values.update(overrides)
    return BenchConfig(base_url=server.base_url, **values)


def measure(server: Server, cfg: Any, quiet: Quiet | None = None) -> dict[str, Any]:
    """One ``qwenhost bench`` run against ``server``, redone while other processes' CPU use spoils it."""
    import asyncio

    from qwenhost.ops.bench import run_bench

    spoiled: list[float] = []
    while True:
        if quiet is not None:
            quiet.wait()
        window = CpuWindow(quiet.pids if quiet is not None else [server.pid])
        threads = ThreadWindow(server.pid)
        report = asyncio.run(run_bench(cfg))
        report["cpu"] = window.close()
        report["threads"] = threads.close()
        other = report["cpu"]["cpu_other_cores"]
        if quiet is None or other < quiet.threshold_cores or len(spoiled) >= quiet.retries:
            break
        spoiled.append(other)
        print(f"  {server.name}: others used {other:.2f} cores during the run; measuring again", file=sys.stderr)
    report["spoiled_attempts_other_cores"] = spoiled
    report["server"] = server.name
    report["rss_mib"] = server.rss_mib()
    del report["config"]["base_url"]
    return report


def heading(results: dict[str, Any]) -> str:
    m = results["machine"]
    rounds = results["args"].get("rounds")
    return (
        f"{m['started']} · {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB · "
        f"load at start {m['loadavg_at_start'][0]:.2f}" + (f" · medians of {rounds} rounds" if rounds else "")
    )


def quiet_from(args: argparse.Namespace) -> Quiet:
    return Quiet(max_wait_s=args.wait_quiet, retries=args.retries)
