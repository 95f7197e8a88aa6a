"""The command line: ``qwenhost serve | models | keys | index | chat | bench``. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from qwenhost import __version__
from qwenhost.config import LOG_LEVELS, ConfigError, Settings, load_settings

EPILOG = """\
examples:
  qwenhost serve                                  # the embedded SmolLM2-135M model on 127.0.0.1:8000
  qwenhost serve --model ./Qwen3-4B-Q4_K_M.gguf   # any GGUF; DashScope names (qwen-plus …) map to it
  qwenhost serve --model Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf --mmproj mmproj-Qwen2.5-VL-3B-f16.gguf
  qwenhost serve --config qwenhost.toml           # several models, aliases, keys, limits
  qwenhost keys add --file keys.txt --name alice  # make an API key; only its hash is stored
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


def cmd_keys(args: argparse.Namespace) -> int:
    from qwenhost.ops.keyfile import KeyFileError, add_key, key_names, remove_key

    path = Path(args.file)
    try:
        if args.action == "add":
            name, key = add_key(path, args.name)
            print(f"{name}: {key}")
            print(
                f'(only its SHA-256 hash is stored in {path}; start the server with api_keys_file = "{path}")',
                file=sys.stderr,
            )
        elif args.action == "list":
            for name in key_names(path):
                print(name)
        else:
            remove_key(path, args.name)
    except KeyFileError as exc:
        print(f"qwenhost: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """The local search index (docs/search.md): the file [search] index_path names, or --index."""
    from qwenhost.tools.search.documents import DocumentError
    from qwenhost.tools.search.local import LocalIndex

    path = args.index or load_settings(args.config).search.index_path
    index = LocalIndex(path)
    if args.action == "add":
        try:
            added = index.add([Path(p) for p in args.paths])
        except (DocumentError, OSError) as exc:
            print(f"qwenhost: {exc}", file=sys.stderr)
            return 1
        for doc in added:
            print(f"added {doc.source} ({doc.passages} passages)")
        print(f"{index.path}: {len(index.entries())} documents")
    elif args.action == "list":
        for doc in index.entries():
            print(f"{doc.id}\t{doc.passages}\t{doc.source}\t{doc.title}")
    else:
        removed = index.remove(list(args.paths))
        for source in removed:
            print(f"removed {source}")
        if not removed:
            print("qwenhost: nothing in the index matched", file=sys.stderr)
            return 1
    return 0


def _add_index(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("index", help="the local search index for enable_search (add | list | remove)")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("paths", nargs="*", metavar="PATH", help="add: files or directories; remove: a source or id")
    p.add_argument("--config", metavar="FILE", help="TOML config file: its [search] index_path")
    p.add_argument("--index", metavar="FILE", help="the index file (default: [search] index_path)")
    p.set_defaults(func=cmd_index)


def cmd_chat(args: argparse.Namespace) -> int:
    from qwenhost.ops.chat_client import chat_repl

    return chat_repl(args.base_url, args.model, args.api_key, system=args.system)


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

    p = sub.add_parser("keys", help="manage hashed API keys in a keys file")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("--file", default="qwenhost-keys.txt", help="keys file (default qwenhost-keys.txt)")
    p.add_argument("--name", help="key name (add: optional; remove: required)")
    p.set_defaults(func=cmd_keys)

    _add_index(sub)

    p = sub.add_parser("chat", help="chat with a running server in the terminal")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/compatible-mode/v1")
    p.add_argument("--model", default="qwen-plus")
    p.add_argument("--api-key", default="sk-local")
    p.add_argument("--system", help="system prompt")
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
    if args.command == "keys" and args.action == "remove" and not args.name:
        parser.error("keys remove needs --name")
    if args.command == "index" and args.action != "list" and not args.paths:
        parser.error(f"index {args.action} needs at least one PATH")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"qwenhost: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
