"""service/prepare.py through ChatService.aprepare/prepare on the FakeBackend: prepare runs off the event
loop, checks run cheapest first (none needs media, and media is fetched only after the reservation),
the reservation is given back on every failure, grammars are cached, and unencodable text is a 400."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from qwenhost.api.wire.request import parse_chat_request
from qwenhost.config import ModelConfig
from qwenhost.core.errors import InvalidParameter, ServeError, UnencodableText
from qwenhost.core.types import ChatRequest
from qwenhost.engine.fake import FakeBackend
from qwenhost.engine.protocol import GrammarVocabulary, MediaCapabilities, ModelInfo
from qwenhost.main import served_model
from qwenhost.media.policy import MediaPolicy
from qwenhost.service.chat import ChatService, Job
from qwenhost.service.media import DecodedPart, MediaPipeline
from qwenhost.service.models import ModelRegistry, ServedModel
from tests.support.grammar_vocab import byte_vocab

USER = [{"role": "user", "content": "Hi"}]
IMAGE = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
WAIT_S = 10.0  # a bound for waits that should never be reached


@dataclass
class Backend(FakeBackend):
    """FakeBackend with a tokenizer that encodes like llama.cpp's, hooks to block it, optional media and
    an optional grammar vocabulary."""

    vocabulary: GrammarVocabulary | None = None
    vocabulary_ready: threading.Event = field(default_factory=threading.Event)
    has_vision: bool = False
    tokenize_gate: threading.Event | None = None
    tokenize_threads: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vocabulary_ready.set()

    @property
    def info(self) -> ModelInfo:
        info = FakeBackend.info.fget(self)  # type: ignore[attr-defined]
        caps = MediaCapabilities("qwen2.5vl_merger", None, patch_size=14, merge_size=2) if self.has_vision else None
        return dataclasses.replace(info, media=caps)

    @property
    def tokenizer(self) -> Backend:
        return self

    def detokenize(self, tokens: list[int]) -> bytes:
        return bytes(tokens)

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        self.tokenize_threads.append(threading.current_thread().name)
        if self.tokenize_gate is not None and not self.tokenize_gate.wait(WAIT_S):
            raise RuntimeError("the tokenizer was never released")
        return list(text.encode("utf-8"))  # raises on lone surrogates, as llama.cpp's does

    def grammar_vocabulary(self) -> GrammarVocabulary | None:
        self.vocabulary_ready.wait()
        return self.vocabulary


class RecordingMedia(MediaPipeline):
    """The media seam: records each fetch, then fails or waits as told (never touches the network)."""

    def __init__(self, error: ServeError | None = None, hang: bool = False) -> None:
        super().__init__(MediaPolicy())
        self.calls = 0
        self.error = error
        self.hang = hang

    async def decode(self, request: ChatRequest, model: ServedModel) -> list[DecodedPart]:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return []


def make(backend: Backend | None = None, media: MediaPipeline | None = None, **kw: Any) -> tuple[ChatService, Backend]:
    backend = backend or Backend()
    model = served_model(ModelConfig(name="m"), backend)
    return ChatService(ModelRegistry([model]), media=media, **kw), backend


def request(**body: Any) -> ChatRequest:
    body.setdefault("messages", USER)
    return parse_chat_request({"model": "m", **body})


def held(backend: Backend) -> int:
    return backend.admission.in_flight_requests


async def aprepare(service: ChatService, **body: Any) -> Job:
    return await service.aprepare(request(**body), request_id="r")


# -- off the loop --------------------------------------------------------------------------------
def test_aprepare_runs_on_the_prepare_pool_while_the_loop_runs_on() -> None:
    gate = threading.Event()
    service, backend = make(Backend(tokenize_gate=gate))

    async def scenario() -> Job:
        task = asyncio.ensure_future(aprepare(service))
        await asyncio.sleep(0)  # the loop runs while the tokenizer is blocked: prepare is not on it
        gate.set()
        return await task

    job = asyncio.run(scenario())
    assert backend.tokenize_threads and all(n.startswith("qwenhost-prepare") for n in backend.tokenize_threads)
    job.close()


def test_a_cancelled_aprepare_gives_back_the_room_its_worker_took() -> None:
    gate = threading.Event()
    service, backend = make(Backend(tokenize_gate=gate))

    async def scenario() -> None:
        task = asyncio.ensure_future(aprepare(service))
        while not backend.tokenize_threads:  # the worker is inside prepare
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()  # the worker finishes and reserves; nobody will run its job
        await asyncio.to_thread(service.close, wait=True)  # the worker is done, its callbacks have run

    asyncio.run(scenario())
    assert held(backend) == 0


# -- grammar vocabulary and cache ------------------------------------------------------------------
def test_a_grammar_waits_for_the_vocabulary_with_a_bound() -> None:
    backend = Backend(vocabulary=byte_vocab().tokenizer)
    backend.vocabulary_ready.clear()
    service, _ = make(backend, grammar_wait_s=0.05)
    with pytest.raises(ServeError) as err:
        asyncio.run(aprepare(service, response_format=SCHEMA))
    assert err.value.status == 503 and "grammar vocabulary is still being built" in err.value.message
    assert held(backend) == 0
    backend.vocabulary_ready.set()
    job = asyncio.run(aprepare(service, response_format=SCHEMA))
    assert job.generation.constraint is not None
    job.close()


def test_compiled_grammars_are_reused_and_never_advanced_in_place() -> None:
    service, _ = make(Backend(vocabulary=byte_vocab().tokenizer))
    first = service.prepare(request(response_format=SCHEMA), request_id="a")
    second = service.prepare(request(response_format=SCHEMA), request_id="b")
    assert first.generation.constraint is second.generation.constraint
    assert (service.grammars.misses, service.grammars.hits) == (1, 1)
    partial = [*USER, {"role": "assistant", "content": "{", "partial": True}]
    advanced = service.prepare(request(response_format=SCHEMA, messages=partial), request_id="c")
    assert advanced.generation.constraint is not first.generation.constraint
    with pytest.raises(ServeError, match="does not fit"):
        service.prepare(
            request(response_format=SCHEMA, messages=[*USER, {**partial[1], "content": "x"}]), request_id="d"
        )
    fresh = first.generation.constraint
    assert fresh is not None
    state = fresh()
    state.consume(ord("{"))  # the shared grammar still starts at the beginning
    assert not state.is_finished()
    for job in (first, second, advanced):
        job.close()


def test_a_bad_schema_is_refused_every_time() -> None:
    service, backend = make(Backend(vocabulary=byte_vocab().tokenizer))
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "oneOf": 3}}}
    for _ in range(2):
        with pytest.raises(InvalidParameter):
            service.prepare(request(response_format=bad), request_id="r")
    assert len(service.grammars) == 0 and held(backend) == 0


# -- cheapest first, media last --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"enable_thinking": True}, 400),  # thinking errors
        ({"enable_search": True}, 400),  # unsupported parameters
        ({"tool_choice": "required"}, 400),  # structured-output checks
        ({"max_input_tokens": 3}, 400),  # the text alone is too long
        ({"n": 2, "seed": 1}, 429),  # no room: capacity is refused before any fetch
    ],
)
def test_every_check_that_needs_no_media_comes_before_the_fetch(body: dict[str, Any], status: int) -> None:
    media = RecordingMedia()
    backend = Backend(has_vision=True, capacity=0 if status == 429 else 1000)
    service, _ = make(backend, media)
    with pytest.raises(ServeError) as err:
        asyncio.run(aprepare(service, messages=IMAGE, **body))
    assert err.value.status == status and media.calls == 0 and held(backend) == 0


def test_a_failed_fetch_gives_the_room_back() -> None:
    media = RecordingMedia(error=InvalidParameter("Failed to download multimodal content"))
    service, backend = make(Backend(has_vision=True), media)
    with pytest.raises(InvalidParameter, match="download"):
        asyncio.run(aprepare(service, messages=IMAGE))
    assert media.calls == 1 and held(backend) == 0


def test_a_request_cancelled_during_the_fetch_gives_the_room_back() -> None:
    media = RecordingMedia(hang=True)
    service, backend = make(Backend(has_vision=True), media)

    async def scenario() -> None:
        task = asyncio.ensure_future(aprepare(service, messages=IMAGE))
        while media.calls == 0:
            await asyncio.sleep(0.01)
        assert held(backend) == 1  # reserved before the fetch
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert held(backend) == 0


def test_a_text_only_model_refuses_media_before_anything_else() -> None:
    media = RecordingMedia()
    service, backend = make(Backend(), media)
    with pytest.raises(InvalidParameter, match="does not support image input"):
        asyncio.run(aprepare(service, messages=IMAGE))
    assert media.calls == 0 and held(backend) == 0


# -- text that cannot be encoded -------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "system", "content": "\udcff"}, *USER]},
        {"stop": ["\ud800"]},
        {"messages": [*USER, {"role": "assistant", "content": "x\udcff", "partial": True}]},
    ],
)
def test_lone_surrogates_are_a_400_not_a_500(body: dict[str, Any]) -> None:
    service, backend = make()
    with pytest.raises(UnencodableText) as err:
        asyncio.run(aprepare(service, **body))
    assert err.value.status == 400 and "lone surrogate" in err.value.message
    assert held(backend) == 0


# -- the job ---------------------------------------------------------------------------------------
def test_the_job_is_frozen_and_carries_no_usage() -> None:
    service, backend = make()
    job = service.prepare(request(), request_id="r")
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.deadline_s = 0.0  # type: ignore[misc]
    assert not hasattr(job, "usage")
    assert held(backend) == 1
    job.close()
    job.close()
    assert held(backend) == 0
