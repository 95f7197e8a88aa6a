"""Constrained output end to end: a json_schema answer with long fixed keys, and a forced tool call, each
greedy and non-streaming, on qwenhost and llama-server side by side (the order alternates every round).

    python -m bench.structured --llama-bin /path/to/llama.cpp/build/bin

What it shows: how long the whole answer takes. Most of such an answer is fixed by the grammar (the keys,
the punctuation); qwenhost decodes each forced run in one batch (jump-forward) and masks with llguidance,
llama-server samples every token through its grammar sampler.

The forced tool call is the same work on both sides. SmolLM2's own template has no tool support, so
qwenhost renders tool requests with its family's built-in template (a 511-token prompt that lists the
tool), and llama-server cannot force a call through that template. The peer therefore gets the very
prompt text qwenhost's engine gets, rendered here by qwenhost's own code, on its native ``/completion``
endpoint, constrained by a JSON schema of the call object (``{"name": <the tool>, "arguments": <its
parameters>}``: what qwenhost's grammar forces between the ``<tool_call>`` tags, which are a few
tokens more on qwenhost's side). The run stops if the two servers count different prompt lengths.

Both servers keep their prompt caches (llama-server's ``cache_prompt`` default, qwenhost's prefix cache):
every request of a workload is identical, so both may reuse the whole prompt; each run records how many
prompt tokens each server took from its cache.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from typing import Any

import httpx

from bench import harness as h

# Long fixed keys, short free values: most tokens of the answer are forced by the schema.
KEYS = (
    "customer_full_legal_name_as_registered",
    "primary_shipping_address_first_line",
    "preferred_delivery_window_description",
    "customer_account_tier_classification",
    "total_number_of_previous_orders_placed",
    "marketing_communication_consent_status",
    "assigned_account_manager_employee_name",
    "internal_risk_assessment_review_notes",
)
STRING = {"type": "string", "maxLength": 12}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{key: STRING for key in KEYS},
        "total_number_of_previous_orders_placed": {"type": "integer", "minimum": 0, "maximum": 9999},
        "marketing_communication_consent_status": {"type": "boolean"},
        "customer_account_tier_classification": {"enum": ["bronze_standard", "silver_premium", "gold_enterprise"]},
    },
    "required": list(KEYS),
    "additionalProperties": False,
}
MESSAGES = [
    {"role": "system", "content": "You extract customer records as JSON."},
    {"role": "user", "content": "Record for Ada Lovelace, 12 Analytical St, mornings, gold tier, 41 orders."},
]
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "register_customer_record_in_crm", "description": "Store a record.", "parameters": SCHEMA},
}
WORKLOADS: dict[str, dict[str, Any]] = {
    "json_schema": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "customer", "schema": SCHEMA}},
    },
    "forced_tool_call": {"tools": [TOOL], "tool_choice": "required"},
}


# What llama-server is asked to write for the forced call: the call object qwenhost writes inside its tags.
CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"const": TOOL["function"]["name"]}, "arguments": SCHEMA},
    "required": ["name", "arguments"],
    "additionalProperties": False,
}


@functools.cache
def tool_prompt() -> str:
    """The prompt text qwenhost's engine gets for the forced tool call, by qwenhost's own code and template
    choice (main.served_model): the GGUF's template if it supports tools, else the family's built-in one."""
    import llama_cpp

    from qwenhost.core.types import Message, ToolSpec
    from qwenhost.formats.registry import detect_format
    from qwenhost.service.prompt import render
    from qwenhost.templates.renderer import ChatTemplate, builtin_template

    vocab = llama_cpp.Llama(h.embedded_model_path(), vocab_only=True, verbose=False)
    own = vocab.metadata.get("tokenizer.chat_template")
    bos, eos = (vocab.detokenize([t], special=True).decode() for t in (vocab.token_bos(), vocab.token_eos()))
    template = ChatTemplate(own or "", bos_token=bos, eos_token=eos)
    if not (own and template.supports_tools):
        source = builtin_template(detect_format(vocab.metadata, own).builtin_template)
        template = ChatTemplate(source, bos_token=bos, eos_token=eos)
    messages = [Message(role=m["role"], content=m["content"]) for m in MESSAGES]  # type: ignore[arg-type]
    function = TOOL["function"]
    tool = ToolSpec(function["name"], function["description"], function["parameters"])
    return render(template, messages, tools=[tool]).text


def request(server: h.Server, workload: str, max_tokens: int) -> tuple[str, dict[str, Any]]:
    """(URL, body): the chat API, except llama-server's forced call on /completion (see the docstring)."""
    if server.name == "llama-server" and workload == "forced_tool_call":
        body = {"prompt": tool_prompt(), "json_schema": CALL_SCHEMA, "n_predict": max_tokens, "cache_prompt": True}
        return server.base_url.removesuffix("/v1") + "/completion", {**body, "temperature": 0, "seed": 1}
    chat = {
        "model": "qwen-plus" if server.name == "qwenhost" else "smollm2",
        "messages": MESSAGES,
        "temperature": 0,
        "max_tokens": max_tokens,
        "seed": 1,
        **WORKLOADS[workload],
    }
    return f"{server.base_url}/chat/completions", chat


def read_chat(data: dict[str, Any]) -> dict[str, Any]:
    choice = data["choices"][0]
    message = choice.get("message", {})
    calls = message.get("tool_calls") or []
    usage = data.get("usage", {})
    return {
        "text": calls[0]["function"]["arguments"] if calls else (message.get("content") or ""),
        "completion_tokens": usage.get("completion_tokens"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
        "finish_reason": choice.get("finish_reason"),
    }


def read_completion(data: dict[str, Any]) -> dict[str, Any]:
    """llama-server's /completion answer: the call object's arguments; a call of another name is invalid."""
    try:
        call = json.loads(data["content"])
    except json.JSONDecodeError:
        call = None
    named = isinstance(call, dict) and call.get("name") == TOOL["function"]["name"]
    return {
        "text": json.dumps(call["arguments"]) if named else data["content"],
        "named": named,
        "completion_tokens": data["tokens_predicted"],
        "prompt_tokens": data["tokens_evaluated"],
        "cached_tokens": data.get("timings", {}).get("cache_n"),
        "finish_reason": data.get("stop_type"),
    }


def one(client: httpx.Client, server: h.Server, workload: str, max_tokens: int) -> dict[str, Any]:
    url, body = request(server, workload, max_tokens)
    started = time.perf_counter()
    r = client.post(url, json=body, timeout=600)
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        return {"status": r.status_code, "seconds": elapsed, "completion_tokens": None, "prompt_tokens": None,
                "cached_tokens": None, "finish_reason": None, "valid_json": False, "text": r.text[:400]}  # fmt: skip
    out = read_completion(r.json()) if url.endswith("/completion") else read_chat(r.json())
    try:
        valid = out.pop("named", True) and isinstance(json.loads(out["text"]), dict)
    except (json.JSONDecodeError, TypeError):
        valid = False
    return {"status": 200, "seconds": elapsed, **out, "valid_json": valid, "text": out["text"][:400]}


def same_prompt(ours: dict[str, Any], peer: dict[str, Any]) -> None:
    """Refuse to compare the forced call if the two servers did not get the same prompt."""
    if ours["prompt_tokens"] != peer["prompt_tokens"]:
        raise SystemExit(
            f"forced_tool_call: qwenhost counted {ours['prompt_tokens']} prompt tokens, llama-server "
            f"{peer['prompt_tokens']}: the prompts differ, the comparison would not be fair"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    with h.side_by_side(args) as (ours, peer, quiet, results), httpx.Client() as client:
        # Compile and cache each grammar once before timing (both servers cache); check the prompts match.
        warm = {(s.name, w): one(client, s, w, args.max_tokens) for s in (ours, peer) for w in WORKLOADS}
        same_prompt(warm["qwenhost", "forced_tool_call"], warm["llama-server", "forced_tool_call"])
        for round_no in range(args.rounds):
            order = (ours, peer) if round_no % 2 == 0 else (peer, ours)
            for workload in WORKLOADS:
                for server in order:
                    quiet.wait()
                    for _ in range(args.requests):
                        run_ = one(client, server, workload, args.max_tokens)
                        run_.update(server=server.name, workload=workload, round=round_no)
                        results["runs"].append(run_)
                        print(line(run_), flush=True)
    results["summary"] = summarize(results["runs"])
    return results


def line(run_: dict[str, Any]) -> str:
    return (
        f"round {run_['round']} {run_['workload']:<16} {run_['server']:<12} {run_['seconds']:6.2f} s "
        f"{run_['completion_tokens']} tokens (prompt {run_['prompt_tokens']}, {run_['cached_tokens']} cached) "
        f"valid={run_['valid_json']} {run_['finish_reason']}"
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workload in WORKLOADS:
        row: dict[str, Any] = {}
        for name in ("qwenhost", "llama-server"):
            mine = [r for r in runs if r["server"] == name and r["workload"] == workload]
            seconds = [r["seconds"] for r in mine]
            row[name] = {
                "seconds": h.median(seconds),
                "min": min(seconds),
                "max": max(seconds),
                "completion_tokens": h.median([float(r["completion_tokens"] or 0) for r in mine]),
                "valid": sum(r["valid_json"] for r in mine),
                "requests": len(mine),
            }
        row["speedup"] = row["llama-server"]["seconds"] / row["qwenhost"]["seconds"]
        out[workload] = row
    return out


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for workload, row in results["summary"].items():
        q, p = row["qwenhost"], row["llama-server"]
        rows.append(
            [
                workload,
                f"{q['seconds']:.2f} ({q['min']:.2f}–{q['max']:.2f}), {q['completion_tokens']:.0f} tokens, "
                f"{q['valid']}/{q['requests']} valid",
                f"{p['seconds']:.2f} ({p['min']:.2f}–{p['max']:.2f}), {p['completion_tokens']:.0f} tokens, "
                f"{p['valid']}/{p['requests']} valid",
                f"{row['speedup']:.2f}×",
                f"≥ 4× {'met' if row['speedup'] >= 4 else 'NOT met'}",
            ]
        )
    header = ["workload", "qwenhost s median (min–max)", "llama-server s median (min–max)", "faster", "target"]
    return f"{h.heading(results)}\n\n{h.table(header, rows)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.common_args(p)
    p.add_argument("--max-tokens", type=int, default=400)
    p.add_argument("--requests", type=int, default=3, help="requests per measurement")
    args = p.parse_args()
    results = run(args)
    h.write_results(h.output_path(args.output, "structured"), results, markdown(results))


if __name__ == "__main__":
    main()
