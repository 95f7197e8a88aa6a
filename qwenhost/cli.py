"""The command line: ``qwenhost serve | models | keys | usage | index | chat | bench``. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwenhost import __version__
from qwenhost.config import LOG_LEVELS, ConfigError, Settings, load_settings

DEFAULT_KEY_FILE = "qwenhost-keys.txt"
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


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action in ("add", "remove") or (args.action == "list" and args.file is not None):
        return _keys_file(args)
    from qwenhost.ops.store.keys import KeyStoreError

    try:
        return _keys_store(args)
    except KeyStoreError as exc:
        print(f"qwenhost: {exc}", file=sys.stderr)
        return 1


def _keys_file(args: argparse.Namespace) -> int:
    """The key file (read-only to the server): ``add`` and ``remove`` edit it; ``list --file`` shows it."""
    from qwenhost.ops.keyfile import KeyFileError, add_key, key_names, remove_key

    path = Path(args.file or DEFAULT_KEY_FILE)
    try:
        if args.action == "list":
            for name in key_names(path):
                print(name)
        elif args.action == "add":
            name, key = add_key(path, args.name)
            print(f"{name}: {key}")
            print(
                f'(only its SHA-256 hash is stored in {path}; start the server with api_keys_file = "{path}")',
                file=sys.stderr,
            )
        else:
            remove_key(path, args.name)
    except KeyFileError as exc:
        print(f"qwenhost: {exc}", file=sys.stderr)
        return 1
    return 0


def _keys_store(args: argparse.Namespace) -> int:
    from qwenhost.ops.store import keys

    engine = _store_engine(args)
    try:
        if args.action == "create":
            record, plain = keys.create_key(engine, args.name, **_key_changes(args))
            print(f"{record.name}: {plain}")
            print("(shown once: only its SHA-256 digest is stored)", file=sys.stderr)
        elif args.action == "list":
            _print_keys(args, keys.list_keys(engine))
        elif args.action == "revoke":
            keys.revoke_key(engine, args.name)
            print(f"{args.name}: revoked (refused from its next request on)")
        else:
            _print_keys(args, [keys.update_key(engine, args.name, _key_changes(args))])
    finally:
        engine.dispose()
    return 0


def _key_changes(args: argparse.Namespace) -> dict[str, object]:
    """The options given (create, update): ``--models`` a comma list, ``--all-models`` and ``--rpm 0`` clear."""
    changes: dict[str, object] = {}
    if args.admin is not None:
        changes["is_admin"] = args.admin
    if args.all_models:
        changes["models"] = None
    elif args.models is not None:
        changes["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    for limit in ("rpm", "tpm"):
        value = getattr(args, limit)
        if value is not None:
            changes[limit] = value or None  # 0: no limit
    return changes


def _print_keys(args: argparse.Namespace, records: Sequence[Any]) -> None:
    rows = [
        [
            r.name,
            "store",
            "admin" if r.is_admin else "user",
            ",".join(r.models) if r.models is not None else "*",
            str(r.rpm or "-"),
            str(r.tpm or "-"),
            "revoked" if r.revoked_ms is not None else "active",
        ]
        for r in records
    ]
    if args.action == "list":  # the static keys: the server reads them, this command never changes them
        settings = load_settings(args.config)
        static = [name for name, _ in settings.server.api_key_hashes]
        rows += [[name, "static (read-only)", "user", "*", "-", "-", "active"] for name in static]
    _print_table(["name", "source", "role", "models", "rpm", "tpm", "state"], rows)


def cmd_usage(args: argparse.Namespace) -> int:
    import json

    from qwenhost.ops.store.ledger import summary

    engine = _store_engine(args)
    try:
        rows = summary(engine, args.since, args.until)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"object": "list", "data": [r.as_json() for r in rows]}, indent=2))
        return 0
    head = [
        "day",
        "key",
        "model",
        "requests",
        "errors",
        "prompt",
        "cached",
        "completion",
        "reasoning",
        "media",
        "total",
    ]
    cells = [
        [
            r.day,
            r.key,
            r.model,
            *map(str, (r.requests, r.errors, r.prompt_tokens, r.cached_tokens)),
            *map(str, (r.completion_tokens, r.reasoning_tokens, r.media_tokens, r.total_tokens)),
        ]
        for r in rows
    ]
    _print_table(head, cells)
    return 0


def _print_table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _store_engine(args: argparse.Namespace) -> Any:
    """The store the server uses: --db (a SQLite path or a postgresql:// URL), else [store] of --config."""
    from qwenhost.ops.store.database import StoreError, StoreSettings, open_engine, sqlite_url

    if args.db:
        url = args.db if "://" in args.db else sqlite_url(args.db)
    else:
        store = load_settings(args.config).store
        if not store.enabled:
            raise ConfigError("[store] enabled = false in the config: there are no keys or ledger to show")
        url = store.resolved_url()
    try:
        return open_engine(StoreSettings(url))
    except StoreError as exc:
        raise ConfigError(str(exc)) from exc


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


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file: its [store] says where the store is")
    p.add_argument("--db", metavar="PATH|URL", help="the store: a SQLite file or postgresql://… (overrides [store])")


def _add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "keys",
        help="API keys in the store: create (shown once), list, revoke, update (docs/team.md)",
        description="create|list|revoke|update work on the store; add|remove edit a key file (--file), which "
        "the server reads as static, read-only keys.",
    )
    p.add_argument("action", choices=["create", "list", "revoke", "update", "add", "remove"])
    p.add_argument("name", nargs="?", help="key name (create, add: optional; revoke, update, remove: required)")
    p.add_argument("--name", dest="name_option", metavar="NAME", help=argparse.SUPPRESS)
    _add_store_args(p)
    p.add_argument("--file", help=f"a key file: add/remove edit it, list shows it (add/remove: {DEFAULT_KEY_FILE})")
    p.add_argument("--admin", action=argparse.BooleanOptionalAction, default=None, help="may use /admin/v1")
    p.add_argument("--models", metavar="M1,M2", help="the only models (names or aliases) this key may use")
    p.add_argument("--all-models", action="store_true", help="update: allow every model again")
    p.add_argument("--rpm", type=int, metavar="N", help="requests per minute for this key (0: no limit)")
    p.add_argument("--tpm", type=int, metavar="N", help="tokens per minute for this key (0: no limit)")
    p.set_defaults(func=cmd_keys)


def _add_usage(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("usage", help="the usage ledger by day, key and model")
    _add_store_args(p)
    p.add_argument("--since", metavar="YYYY-MM-DD", help="first day (UTC), inclusive")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="last day (UTC), inclusive")
    p.add_argument("--json", action="store_true", help="the same rows as GET /admin/v1/usage returns")
    p.set_defaults(func=cmd_usage)


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

    _add_keys(sub)
    _add_usage(sub)

    _add_index(sub)

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
    if args.command == "keys":
        args.name = args.name or args.name_option
        if args.action in ("remove", "revoke", "update") and not args.name:
            parser.error(f"keys {args.action} needs a key name")
    if args.command == "index" and args.action != "list" and not args.paths:
        parser.error(f"index {args.action} needs at least one PATH")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"qwenhost: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
