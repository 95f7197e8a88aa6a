"""The command line: ``qwenhost serve | models | chat | bench``, and the admin commands of cli_admin.py."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from qwenhost import __version__, cli_admin
from qwenhost.config import LOG_LEVELS, ConfigError, Settings, load_settings

EPILOG = """\
examples:
  qwenhost serve                                  # the embedded SmolLM2-135M model on 127.0.0.1:8000
  qwenhost serve --model ./Qwen3-4B-Q4_K_M.gguf   # any GGUF; DashScope names (qwen-plus …) map to it
  qwenhost serve --model Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf --mmproj mmproj-Qwen2.5-VL-3B-f16.gguf
  qwenhost serve --config qwenhost.toml           # several models, aliases, keys, limits
  qwenhost keys create alice --rpm 60             # an API key in the store; only its hash is kept
  qwenhost usage                                  # tokens by day, key and model
Clients use base_url http://127.0.0.1:8000/compatible-mode/v1 with the official openai SDKs.
"""


def _add_settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (see README: Configuration)")
    p.add_argument("--model", metavar="PATH", help="serve this GGUF file (default: the embedded SmolLM2-135M)")
    p.add_argument("--parallel", type=int, help="sequences decoded together (default 4)")
    p.add_argument("--context-length", type=int, help="tokens per request, prompt + answer (default: model's, ≤8192)")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: all cores)")
    p.add_argument(
        "--kv-layout",
        choices=("unified", "split"),
        help="KV cache: one stream per sequence (default; faster decode) or one buffer shared by all "
        "(less memory, bounded by kv_cache_tokens; docs/performance.md)",
    )
    p.add_argument("--mmproj", metavar="PATH", help="multimodal projector GGUF for --model (images, video, audio)")
    p.add_argument(
        "--allow-private-urls",
        action="store_true",
        default=None,
        help="let media URLs reach loopback/private/link-local addresses (off by default: SSRF guard)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        model_path=args.model,
        api_keys=getattr(args, "api_key", None) or (),
        parallel=args.parallel,
        context_length=args.context_length,
        threads=args.threads,
        mmproj=args.mmproj,
        kv_layout=args.kv_layout,
        allow_private_urls=args.allow_private_urls,
        log_level=args.log_level,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    if args.ray:
        try:
            from qwenhost.deploy.ray.launch import serve_on_ray
        except ImportError as exc:
            raise ConfigError(f"--ray needs the ray extra: pip install 'qwenhost[ray]' ({exc})") from None
        serve_on_ray(_settings(args), args.replicas, args.ray_address, args.ray_router)
        return 0
    from qwenhost.main import serve

    serve(_settings(args))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from qwenhost.main import load_models

    registry = load_models(_settings(args))
    for model in registry:
        rows: dict[str, object] = {
            "path": model.config.resolved_path(),
            "aliases": ", ".join(model.config.aliases) or "-",
            **model.capabilities(),
        }
        width = max(len(k) for k in rows) + 2
        print(f"{model.name}")
        for key, value in rows.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
            print(f"  {key + ':':<{width}}{'-' if value is None else value}")
        model.backend.close()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from qwenhost.ops.chat_client import chat_repl

    return chat_repl(
        args.base_url,
        args.model,
        args.api_key,
        system=args.system,
        max_tokens=args.max_tokens,
        history_path=Path(args.history).expanduser() if args.history else None,
        library_logs=args.log_level == "debug",  # httpx's request lines only when debugging
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from qwenhost.ops.bench import run_bench_cli

    return run_bench_cli(args)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", help="start the API server", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1; others need API keys)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accept this bearer key (repeatable; also QWENHOST_API_KEYS=k1,k2)",
    )
    _add_settings_args(p)
    ray = p.add_argument_group("scale out on Ray Serve (pip install 'qwenhost[ray]'; docs/scale-out.md)")
    ray.add_argument("--ray", action="store_true", help="serve N engine replicas behind one ingress on Ray Serve")
    ray.add_argument("--replicas", type=int, default=2, help="engine replicas with --ray (default 2)")
    ray.add_argument(
        "--ray-address", metavar="ADDR", help="join this Ray cluster ('auto' after `ray start`; default: start one)"
    )
    ray.add_argument(
        "--ray-router", choices=("prefix", "default"), default="prefix", help="prefix affinity (default) or Ray's own"
    )
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwenhost",
        description="A self-hosted server for Alibaba Cloud Model Studio's (DashScope) OpenAI-compatible "
        "chat API, on local GGUF models through llama.cpp.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qwenhost {__version__}")
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="qwenhost's log level (default: [server] log_level, else info)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_serve(sub)

    p = sub.add_parser("models", help="load the configured models and show family and capabilities")
    _add_settings_args(p)
    p.set_defaults(func=cmd_models)

    cli_admin.add_commands(sub)

    p = sub.add_parser(
        "chat",
        help="chat with a running server in the terminal",
        description="A REPL over any compatible-mode server; type /help in it for the commands.",
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000/compatible-mode/v1")
    p.add_argument("--model", default="qwen-plus")
    p.add_argument("--api-key", default="sk-local")
    p.add_argument("--system", help="system prompt (/system changes it)")
    p.add_argument("--max-tokens", type=int, help="max_tokens of each answer (default: the server's)")
    p.add_argument(
        "--history", default="~/.qwenhost_history", help="readline history file ('' keeps none; default %(default)s)"
    )
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("bench", help="load-test any OpenAI-compatible server (qwenhost or a peer)")
    from qwenhost.ops.bench import add_bench_args

    add_bench_args(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # serve applies [server] log_level and access_log once the settings are read (main.configure_logging).
    level = (args.log_level or "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cli_admin.check_args(parser, args)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"qwenhost: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
