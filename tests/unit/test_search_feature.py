"""enable_search's request rules and [search] config: refused with DashScope's words when no provider is usable;
the forced search placed right before the last user message; strict config keys and ranges."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qwenhost.config import ConfigError, load_settings
from qwenhost.core.errors import InvalidParameter, NotSupported
from qwenhost.core.types import ChatRequest, Message, SearchOptions
from qwenhost.service.search import SearchFeature
from qwenhost.service.tool_loop import ToolLoop
from qwenhost.tools.search.config import SearchConfig
from qwenhost.tools.search.local import LocalIndex
from qwenhost.tools.search.remote import BraveProvider
from qwenhost.tools.search.searcher import Searcher


def request(**kw: object) -> ChatRequest:
    messages = (
        Message("system", "be brief"),
        Message("user", "first question"),
        Message("assistant", "first answer"),
        Message("user", "when is the capybara festival?"),
    )
    return ChatRequest(model="m", messages=messages, enable_search=True, **kw)  # type: ignore[arg-type]


def test_no_usable_provider_keeps_dashscopes_refusal(tmp_path: Path) -> None:
    searcher = Searcher(
        [LocalIndex(str(tmp_path / "none.sqlite3")), BraveProvider("http://x", None, 1.0)], SearchConfig()
    )
    with pytest.raises(NotSupported, match=r"^This model does not support enable_search\.$"):
        asyncio.run(ToolLoop([SearchFeature(searcher)]).open(request(), None))


def test_forced_search_sits_before_the_last_user_message(tmp_path: Path) -> None:
    doc = tmp_path / "f.md"
    doc.write_text("# Festival\nThe capybara festival is on Tuesday.", "utf-8")
    index = LocalIndex(str(tmp_path / "i.sqlite3"))
    index.add([doc])
    loop = ToolLoop([SearchFeature(Searcher([index], SearchConfig()))])
    options = SearchOptions(forced_search=True, enable_search_extension=True)
    session = asyncio.run(loop.open(request(search_options=options), None))
    assert session is not None and not session.tools  # turbo: the forced search is all; nothing offered
    assert "enable_search_extension" in session.notes[0]  # accepted, and said to have no effect
    roles = [m.role for m in session.request.messages]
    assert roles == ["system", "user", "assistant", "system", "user"]  # the history's bytes are untouched
    assert "capybara festival is on Tuesday" in session.request.messages[3].text()
    assert not session.request.enable_search and session.reports[0].info["search_results"][0]["title"] == "Festival"


def test_model_decides_agent_offers_the_tool_and_n_above_one_is_refused(tmp_path: Path) -> None:
    index = LocalIndex(str(tmp_path / "i.sqlite3"))
    (tmp_path / "d.txt").write_text("x", "utf-8")
    index.add([tmp_path / "d.txt"])
    loop = ToolLoop([SearchFeature(Searcher([index], SearchConfig(agent_calls=3)))])
    session = asyncio.run(loop.open(request(search_options=SearchOptions(search_strategy="agent")), None))
    assert session is not None and list(session.tools) == ["search"] and session.max_calls == 3
    with pytest.raises(InvalidParameter, match="n = 1 only"):
        asyncio.run(loop.open(request(n=2), None))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("bogus = 1", "unknown keys: 'bogus'"),
        ('providers = ["google"]', "unknown provider 'google'"),
        ("max_results = 0", "max_results: must be at least 1"),
        ("timeout_s = 0", "timeout_s: must be more than 0"),
    ],
)
def test_search_config_is_strict(tmp_path: Path, table: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[search]\n{table}\n", "utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(str(cfg), environ={})


def test_keys_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"QWENHOST_BRAVE_API_KEY": "b", "QWENHOST_TAVILY_API_KEY": "t"})
    assert settings.search.brave_api_key == "b" and settings.search.tavily_api_key == "t"
