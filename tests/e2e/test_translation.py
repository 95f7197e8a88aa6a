"""translation_options (Qwen-MT, spec §4.14) end to end with the official openai SDK on the embedded model:
the options reach the prompt the engine received (the server's debug log), the answer is a normal completion
(streaming too), and conversations Qwen-MT does not take are refused with a clear message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import E2E_ARGS
from tests.support.server import RunningServer, running_server

pytestmark = pytest.mark.e2e

MODEL = "qwen-mt-plus"
TEXT = "我看到这个视频后没有笑"
OPTIONS = {
    "source_lang": "Chinese",
    "target_lang": "English",
    "terms": [{"source": "视频", "target": "footage"}],
    "tm_list": [{"source": "我没有笑", "target": "I did not laugh"}],
    "domains": "A casual social-media comment.",
}


@pytest.fixture(scope="module")
def mt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = '[server]\nlog_level = "debug"\n'
    with running_server(tmp_path_factory.mktemp("translation"), E2E_ARGS, config=config) as srv:
        yield srv


@pytest.fixture(scope="module")
def mt(mt_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=mt_server.base_url, api_key="sk-test", max_retries=0, timeout=120)


def translate(client: openai.OpenAI, messages: list[dict[str, Any]], **options: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        extra_body={"translation_options": {**OPTIONS, **options}},
        max_tokens=16,
        temperature=0,
    )


def test_terms_and_memory_reach_the_prompt_and_a_completion_comes_back(
    mt: openai.OpenAI, mt_server: RunningServer
) -> None:
    raw = translate(mt, [{"role": "user", "content": TEXT}])
    done = raw.parse()
    assert done.object == "chat.completion" and done.choices[0].message.content
    assert done.model == MODEL
    (text,) = mt_server.prompts(raw.headers["x-request-id"])
    assert "from Chinese into English" in text
    assert "- 视频 => footage" in text  # the term
    assert "- 我没有笑 => I did not laugh" in text  # the translation memory
    assert "A casual social-media comment." in text
    assert text.index("Answer with the translation only") < text.rindex(TEXT)  # instructions, then the text


def test_streaming_gives_the_same_translation(mt: openai.OpenAI) -> None:
    whole = translate(mt, [{"role": "user", "content": TEXT}]).parse().choices[0].message.content
    stream = mt.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": TEXT}],
        extra_body={"translation_options": OPTIONS},
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole


def test_auto_source_language_is_accepted(mt: openai.OpenAI, mt_server: RunningServer) -> None:
    raw = translate(mt, [{"role": "user", "content": TEXT}], source_lang="auto", target_lang="japanese")
    (text,) = mt_server.prompts(raw.headers["x-request-id"])
    assert "Translate the user's text into Japanese." in text  # names as Qwen-MT spells them


@pytest.mark.parametrize(
    ("messages", "options", "message"),
    [
        (
            [{"role": "system", "content": "Be formal."}, {"role": "user", "content": TEXT}],
            {},
            "takes no system message",
        ),
        (
            [
                {"role": "user", "content": TEXT},
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": "y"},
            ],
            {},
            "exactly one message, with role user",
        ),
        (
            [{"role": "user", "content": TEXT}],
            {"target_lang": "Klingon"},
            "'Klingon' is not a supported language: Chinese, English",
        ),
        ([{"role": "user", "content": TEXT}], {"source_lang": None}, "translation_options.source_lang is required"),
        (
            [{"role": "user", "content": TEXT}],
            {"terms": [{"source": "a"}]},
            "translation_options.terms must be a list of",
        ),
    ],
)
def test_conversations_qwen_mt_does_not_take_are_refused(
    mt: openai.OpenAI, messages: list[dict[str, Any]], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        translate(mt, messages, **options)
    assert isinstance(caught.value.body, dict)
    assert message in caught.value.body["message"] and caught.value.body["code"] == "invalid_parameter_error"
