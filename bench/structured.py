"""Constrained output end to end: a json_schema answer with long fixed keys, and a forced tool call, each
greedy and non-streaming, on qwenhost and llama-server side by side (the order alternates every round).

    python -m bench.structured --llama-bin /path/to/llama.cpp/build/bin

What it shows: how long the whole answer takes. Most of such an answer is fixed by the grammar (the keys,
the punctuation); qwenhost decodes each forced run in one batch (jump-forward) and masks with llguidance,
llama-server samples every token through its grammar sampler.
"""

from __future__ import annotations

import argparse
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
TOOL = {
    "type": "function",
    "function": {"name": "register_customer_record_in_crm", "description": "Store a record.", "parameters": SCHEMA},
}
WORKLOADS: dict[str, dict[str, Any]] = {
    "json_schema": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "customer", "schema": SCHEMA}},
    },
    "forced_tool_call": {"tools": [TOOL], "tool_choice": "required"},
}


# llama-server enforces no tool call for a template without tool support (SmolLM2's): it answers free text
# (tried: 400 tokens of prose under tool_choice "required"). It gets the call's arguments as a json_schema
# answer instead, which is the same constrained work; docs/performance.md says so beside the numbers.
PEER_WORKLOADS = {**WORKLOADS, "forced_tool_call": {"response_format": WORKLOADS["json_schema"]["response_format"]}}


def body(server: h.Server, workload: str, max_tokens: int) -> dict[str, Any]:
    shape = WORKLOADS[workload] if server.name == "qwenhost" else PEER_WORKLOADS[workload]
    return {
        "model": "qwen-plus" if server.name == "qwenhost" else "smollm2",
        "messages": MESSAGES,
        "temperature": 0,
        "max_tokens": max_tokens,
        "seed": 1,
        **shape,
    }


def one(client: httpx.Client, server: h.Server, workload: str, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    r = client.post(f"{server.base_url}/chat/completions", json=body(server, workload, max_tokens), timeout=600)
    elapsed = time.perf_counter() - started
    data = r.json()
    choice = data["choices"][0] if r.status_code == 200 else {}
    message = choice.get("message", {})
    calls = message.get("tool_calls") or []
    text = calls[0]["function"]["arguments"] if calls else (message.get("content") or "")
    try:
        valid = isinstance(json.loads(text), dict)
    except (json.JSONDecodeError, TypeError):
        valid = False
    return {
        "status": r.status_code,
        "seconds": elapsed,
        "completion_tokens": data.get("usage", {}).get("completion_tokens") if r.status_code == 200 else None,
        "finish_reason": choice.get("finish_reason"),
        "valid_json": valid,
        "text": text[:400] if r.status_code == 200 else r.text[:400],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with h.side_by_side(args) as (ours, peer, quiet, results), httpx.Client() as client:
        for server in (ours, peer):  # compile and cache each grammar once before timing (both servers cache)
            for workload in WORKLOADS:
                one(client, server, workload, args.max_tokens)
        for round_no in range(args.rounds):
            order = (ours, peer) if round_no % 2 == 0 else (peer, ours)
            for workload in WORKLOADS:
                for server in order:
                    quiet.wait()
                    for _ in range(args.requests):
                        run_ = one(client, server, workload, args.max_tokens)
                        run_.update(server=server.name, workload=workload, round=round_no)
                        results["runs"].append(run_)
                        print(
                            f"round {round_no} {workload:<16} {server.name:<12} {run_['seconds']:6.2f} s "
                            f"{run_['completion_tokens']} tokens valid={run_['valid_json']} {run_['finish_reason']}",
                            flush=True,
                        )
    results["summary"] = summarize(results["runs"])
    return results


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
