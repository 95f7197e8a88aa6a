"""Shared fixtures: one real server on the embedded model for the whole session, and SDK clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fixtures.tiny_qwen3 import build_tiny_qwen3
from tests.support.server import RunningServer, running_server

E2E_ARGS = ("--parallel", "4", "--context-length", "4096")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("server"), E2E_ARGS) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=120)


@pytest.fixture
def aclient(server: RunningServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tiny_qwen3_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen3-architecture GGUF (tests/fixtures/tiny_qwen3.py); loads in well under a second."""
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3") / "tiny-qwen3.gguf")
