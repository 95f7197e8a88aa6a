"""The playground page at / in Debian's headless chromium, driven by Playwright, against the real server: no console
errors, a prompt typed and sent with the keyboard streams its answer, usage and timing show, the thought is shown
apart and thinking is switched, errors read as DashScope's message, and the copied curl/Python code runs.

Screenshots go to $QWENHOST_TEST_ARTIFACTS when set, else to the test's pytest tmp dir.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.fixtures.tiny_vlm import build_all
from tests.support.server import RunningServer, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSWER_TIMEOUT_MS = 180_000  # the embedded model on a busy 2-core machine; no tight timings
USAGE = re.compile(r"prompt \d+ \(cached \d+\) · completion \d+ · total \d+ · TTFT \d+ ms · [\d.]+ tokens/s · [\d.]+ s")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y chromium"),
]


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions, in order


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    tab = Tab(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
    yield tab
    page.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ["QWENHOST_TEST_ARTIFACTS"]) if os.environ.get("QWENHOST_TEST_ARTIFACTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def tiny_server(tiny_qwen3_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The tiny random-weight Qwen3 GGUF twice: as a hybrid qwen3 and as a thinking-only model (whose prompt
    opens the thought, so random weights still think)."""
    common = f'path = "{tiny_qwen3_gguf}"\nparallel = 2\ncontext_length = 1024\nthreads = 1\n'
    config = (
        f'[[models]]\nname = "tiny-qwen3"\n{common}'
        f'[[models]]\nname = "tiny-thinker"\n{common}family = "qwen3-thinking-2507"\n'
    )
    with running_server(tmp_path_factory.mktemp("playground"), config=config) as srv:
        yield srv


def open_page(tab: Tab, server: RunningServer, model: str) -> Page:
    page = tab.page
    page.goto(f"{server.root}/")
    page.wait_for_selector(f'#model option[value="{model}"]', state="attached")
    page.select_option("#model", model)
    return page


def send(page: Page, prompt: str) -> None:
    """Types the prompt and sends it with Enter; waits until the answer's usage line is there."""
    usage = page.locator(".turn.assistant .usage")
    count = usage.count()
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")
    usage.nth(count).wait_for(timeout=ANSWER_TIMEOUT_MS)


def count_answer_updates(page: Page) -> None:
    """Counts, in the page, each change of an answer's text: a streamed answer changes many times."""
    page.evaluate(
        """() => {
        window.answerUpdates = 0;
        new MutationObserver((records) => {
            for (const r of records) if (r.target.closest && r.target.closest('.answer')) window.answerUpdates++;
        }).observe(document.getElementById('log'), {subtree: true, childList: true});
    }"""
    )


def run_snippet(page: Page, button: str, argv: list[str]) -> str:
    page.click(button)
    code = page.input_value("#snippet")
    env = {**os.environ, "DASHSCOPE_API_KEY": "sk-test"}
    done = subprocess.run([*argv, code], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, f"{code}\n{done.stderr}"
    return done.stdout


def test_a_prompt_streams_an_answer_with_usage_and_the_code_runs(
    server: RunningServer, tab: Tab, artifacts: Path
) -> None:
    page = open_page(tab, server, "qwen-plus")
    assert "no thinking" in page.inner_text("#model-info")
    assert page.is_disabled("#thinking") and page.is_disabled("#image")
    page.fill("#max-tokens", "12")
    count_answer_updates(page)
    send(page, "Count from 1 to 30, separated by commas.")

    answer = page.inner_text(".turn.assistant .answer")
    assert answer.strip()
    assert page.evaluate("window.answerUpdates") >= 3, "the answer was not shown as it streamed"
    assert USAGE.search(page.inner_text(".turn.assistant .usage")), page.inner_text(".turn.assistant .usage")
    assert page.locator(".thinking").count() == 0
    assert page.evaluate("document.activeElement.id") == "prompt"  # ready for the next message
    assert page.get_attribute("#log", "aria-busy") == "false"
    page.screenshot(path=str(artifacts / "playground-chat.png"), full_page=True)
    assert (artifacts / "playground-chat.png").stat().st_size > 0

    curl = run_snippet(page, "#copy-curl", ["bash", "-c"])
    assert '"model":"qwen-plus"' in curl and curl.rstrip().endswith("data: [DONE]")
    python = run_snippet(page, "#copy-python", [sys.executable, "-c"])
    assert "completion_tokens=" in python
    assert tab.errors == []


def test_thinking_shows_apart_and_switches_and_errors_read_well(
    tiny_server: RunningServer, tab: Tab, artifacts: Path
) -> None:
    page = open_page(tab, tiny_server, "tiny-thinker")
    assert page.is_checked("#thinking") and page.is_disabled("#thinking")  # thinking-only: always on
    page.fill("#thinking-budget", "8")
    page.fill("#max-tokens", "8")
    send(page, "hi")
    first = page.locator(".turn.assistant").nth(0)
    assert first.locator(".thinking .reasoning").inner_text()  # the thought, in its own box before the answer
    assert first.locator(".thinking + .answer").count() == 1
    reasoning = re.search(r"completion \d+ \(reasoning (\d+)\)", first.locator(".usage").inner_text())
    assert reasoning and 0 < int(reasoning.group(1)) <= 8
    page.screenshot(path=str(artifacts / "playground-thinking.png"), full_page=True)

    page.select_option("#model", "tiny-qwen3")  # hybrid: thinking on by default, switchable
    assert page.is_enabled("#thinking") and page.is_checked("#thinking")
    page.focus("#thinking")
    page.keyboard.press("Space")
    assert not page.is_checked("#thinking")
    send(page, "hi again")
    second = page.locator(".turn.assistant").nth(1)
    assert second.locator(".thinking").count() == 0 and "reasoning" not in second.locator(".usage").inner_text()
    page.click("#copy-python")
    assert '"enable_thinking": False' in page.input_value("#snippet")
    assert tab.errors == []

    page.click("#settings details > summary")  # open "Structured output and tools"
    page.fill("#schema", "{not json")
    page.fill("#prompt", "hi")
    page.press("#prompt", "Enter")
    assert "The JSON schema is not valid JSON" in page.inner_text("#form-error")
    assert page.evaluate("document.activeElement.id") == "schema"

    page.select_option("#model", "tiny-thinker")
    page.fill("#schema", '{"type": "object"}')
    send_and_fail = page.locator(".turn.assistant .error")
    page.fill("#prompt", "hi")
    page.press("#prompt", "Enter")
    send_and_fail.wait_for()
    message = send_and_fail.inner_text()
    assert message.startswith("400 invalid_parameter_error: Json mode response is not supported when enable_thinking")
    assert send_and_fail.get_attribute("role") == "alert"
    assert [e for e in tab.errors if "status of 400" not in e] == []  # the browser's own line for the 400


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The tiny random-weight Qwen2.5-VL (tests/fixtures/tiny_vlm.py): the real image path, gibberish answers."""
    tmp = tmp_path_factory.mktemp("playground-vl")
    text, mmproj = build_all(tmp / "fixtures")["qwen25vl"]
    config = f'[[models]]\nname = "vl"\npath = "{text}"\nmmproj = "{mmproj}"\nparallel = 1\ncontext_length = 2048\n'
    with running_server(tmp, config=config) as srv:
        yield srv


def test_an_image_is_attached_on_a_vision_model(vision_server: RunningServer, tab: Tab, tmp_path: Path) -> None:
    image = tmp_path / "square.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    page = open_page(tab, vision_server, "vl")
    assert page.is_enabled("#image") and "reads images" in page.inner_text("#model-info")
    page.set_input_files("#image", str(image))
    page.fill("#max-tokens", "4")
    send(page, "What colour is it?")
    assert (page.get_attribute(".turn.user img", "src") or "").startswith("data:image/png;base64,")
    assert re.search(r"prompt \d+ \(cached \d+\) \(image \d+\)", page.inner_text(".turn.assistant .usage"))
    assert page.input_value("#image") == ""  # the image went with that message only
    assert tab.errors == []


TOOLS = '[{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]'


def test_a_tool_call_is_shown_and_its_result_sent_back(tiny_server: RunningServer, tab: Tab) -> None:
    page = open_page(tab, tiny_server, "tiny-qwen3")
    page.uncheck("#thinking")  # tool_choice "required" is refused in thinking mode (spec §4.4)
    page.fill("#max-tokens", "120")
    page.click("#settings details > summary")
    page.fill("#tools", TOOLS)
    page.select_option("#tool-choice", "required")
    send(page, "What time is it?")
    assert page.inner_text(".turn.assistant .tool-calls").startswith("get_time({")
    assert page.inner_text("#prompt-label") == "Tool result for get_time"

    page.select_option("#tool-choice", "none")  # under "auto" a random-weight model may call again
    send(page, "12:00")
    assert page.inner_text(".turn.user >> nth=1").startswith("Tool result")
    page.click("#copy-python")
    code = page.input_value("#snippet")
    assert '"role": "tool"' in code and '"tool_call_id": "call_' in code and '"tool_calls": [' in code
    assert page.inner_text("#prompt-label") == "Message"
    assert tab.errors == []


def test_the_key_is_typed_in_the_page_and_kept_in_the_tab(tiny_qwen3_gguf: Path, tmp_path: Path, tab: Tab) -> None:
    config = f'[[models]]\nname = "tiny-qwen3"\npath = "{tiny_qwen3_gguf}"\nparallel = 1\ncontext_length = 512\n'
    with running_server(tmp_path, args=("--api-key", "sk-team"), config=config) as keyed:
        page = tab.page
        page.goto(f"{keyed.root}/")  # the page itself needs no key
        page.get_by_text("this server needs an API key").wait_for()
        page.fill("#api-key", "sk-team")
        page.press("#api-key", "Enter")
        page.wait_for_selector('#model option[value="tiny-qwen3"]', state="attached")
        assert page.evaluate("sessionStorage.getItem('qwenhost.apiKey')") == "sk-team"
        assert page.evaluate("localStorage.getItem('qwenhost.apiKey')") is None  # not remembered unless asked
        page.fill("#max-tokens", "4")
        page.uncheck("#thinking")
        send(page, "hi")
        assert page.locator(".turn.assistant .error").count() == 0
        page.click("#copy-curl")
        assert "sk-team" not in page.input_value("#snippet")  # the code reads $DASHSCOPE_API_KEY instead
    assert [e for e in tab.errors if "status of 401" not in e] == []  # the browser's own line for the first 401
