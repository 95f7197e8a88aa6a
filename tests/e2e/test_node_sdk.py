"""The seed's Node.js examples, run with the official `openai` npm package and only the base URL changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.server import RunningServer

pytestmark = pytest.mark.e2e

OPENAI_NODE = "openai@7.57.0"

BASIC = """
import OpenAI from "openai";
const openai = new OpenAI({ apiKey: process.env.DASHSCOPE_API_KEY, baseURL: process.env.BASE_URL });
async function main() {
    const completion = await openai.chat.completions.create({
        model: "qwen-plus",
        messages: [
            { role: "system", content: "You are a helpful assistant." },
            { role: "user", content: "Who are you?" }
        ],
        max_tokens: 24,
    });
    console.log(JSON.stringify(completion))
}
main();
"""

STREAM = """
import OpenAI from "openai";
const openai = new OpenAI({ apiKey: process.env.DASHSCOPE_API_KEY, baseURL: process.env.BASE_URL });
async function main() {
    const completion = await openai.chat.completions.create({
        model: "qwen-plus",
        messages: [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Who are you?"}
        ],
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: 24,
    });
    for await (const chunk of completion) {
        console.log(JSON.stringify(chunk));
    }
}
main();
"""


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are not installed")
    folder = tmp_path_factory.mktemp("node")
    result = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", OPENAI_NODE],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(f"npm could not install {OPENAI_NODE}: {result.stderr[-500:]}")
    return folder


def run_node(folder: Path, source: str, server: RunningServer) -> list[str]:
    script = folder / "example.mjs"
    script.write_text(source, "utf-8")
    env = {**os.environ, "DASHSCOPE_API_KEY": "sk-local", "BASE_URL": server.base_url}
    result = subprocess.run(["node", str(script)], cwd=folder, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_node_basic(node_dir: Path, server: RunningServer) -> None:
    (line,) = run_node(node_dir, BASIC, server)
    completion = json.loads(line)
    assert completion["object"] == "chat.completion" and completion["model"] == "qwen-plus"
    assert completion["choices"][0]["message"]["content"]


def test_node_streaming(node_dir: Path, server: RunningServer) -> None:
    chunks = [json.loads(line) for line in run_node(node_dir, STREAM, server)]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
