"""Whether llama.cpp's CPU extra buffer types (AMX tiles, repacked weights) run on this machine.

Some virtual machines advertise AMX in cpuid and let a process ask for the tile state, yet fault on
the first tile instruction (``ldtilecfg``): ggml then kills the process on the first prompt of a few
dozen tokens. Only CPUs that advertise AMX are probed, once, in a child process, so a fault costs
nothing but the probe. The answer decides ``llama_model_params.use_extra_bufts`` (llama-server's
``--no-repack``) when a model's ``weight_repack`` is left to "auto".
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import llama_cpp as L

PROBE_TOKENS = 64  # above the batch size from which ggml hands matrix products to the AMX kernels


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text("utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@functools.cache
def extra_buffers_work(model_path: str, timeout_s: float = 120.0) -> bool:
    """True unless the CPU advertises AMX and a decode with extra buffer types dies in a child process."""
    if "amx_tile" not in cpu_flags():
        return True
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qwenhost.engine.llamacpp.cpu_probe", model_path],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _decode_once(model_path: str) -> None:
    """Load ``model_path`` with extra buffer types on and decode one batch of PROBE_TOKENS tokens."""
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.use_extra_bufts = True
    model = L.llama_model_load_from_file(model_path.encode(), params)
    if not model:
        raise SystemExit(f"could not load {model_path}")
    ctx_params = L.llama_context_default_params()
    ctx_params.n_ctx = 256
    ctx_params.n_batch = ctx_params.n_ubatch = PROBE_TOKENS
    ctx_params.n_threads = ctx_params.n_threads_batch = 1
    ctx = L.llama_init_from_model(model, ctx_params)
    vocab = L.llama_model_get_vocab(model)
    token = L.llama_vocab_bos(vocab)
    tokens = (L.llama_token * PROBE_TOKENS)(*([max(token, 0)] * PROBE_TOKENS))
    if L.llama_decode(ctx, L.llama_batch_get_one(tokens, PROBE_TOKENS)) != 0:
        raise SystemExit("llama_decode failed")
    L.llama_free(ctx)
    L.llama_model_free(model)


def _ignore(level: int, text: bytes, user: object) -> None:
    return None


_QUIET = L.llama_log_callback(_ignore)  # kept referenced: llama.cpp calls it for as long as it runs

if __name__ == "__main__":
    L.llama_log_set(_QUIET, None)
    _decode_once(sys.argv[1])
