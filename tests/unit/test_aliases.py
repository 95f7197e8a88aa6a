"""Per-alias policy (aliases.py): the built-in table, the [alias_policy] config tables, and what a request under
each name gets through ChatService.prepare() on the FakeBackend with a Qwen3 (hybrid) template."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from qwenhost.aliases import (
    COMMERCIAL_TEXT,
    DEFAULT_TEXT_ALIASES,
    OPEN_SOURCE_TEXT,
    AliasPolicy,
    builtin_policy,
)
from qwenhost.api.app import create_app
from qwenhost.api.wire.request import parse_chat_request
from qwenhost.config import ConfigError, ModelConfig, load_settings
from qwenhost.core.errors import ModelNotFound, ServeError
from qwenhost.core.types import SamplingOverrides
from qwenhost.engine.fake import FakeBackend
from qwenhost.engine.protocol import MediaCapabilities, ModelInfo
from qwenhost.main import served_model
from qwenhost.ops.auth import KeyStore
from qwenhost.ops.metrics import Metrics
from qwenhost.service.chat import ChatService, Job
from qwenhost.service.models import ModelRegistry, ServedModel
from qwenhost.templates.renderer import builtin_template

USER = [{"role": "user", "content": "Hi"}]
STREAM_ONLY = "parameter.enable_thinking must be set to false for non-streaming calls"


class VisionFake(FakeBackend):
    @property
    def info(self) -> ModelInfo:
        info = FakeBackend.info.fget(self)  # type: ignore[attr-defined]
        return dataclasses.replace(info, media=MediaCapabilities("qwen2.5vl_merger", None, 14, 2))


def served(name: str = "m", aliases: tuple[str, ...] = DEFAULT_TEXT_ALIASES, vision: bool = False) -> ServedModel:
    cls = VisionFake if vision else FakeBackend
    backend = cls(chat_template=builtin_template("qwen3"), script=lambda r, c: "ok", context_length=2048)
    return served_model(ModelConfig(name=name, path="unused.gguf", aliases=aliases), backend)


def prepare(registry: ModelRegistry, model: str, **body: Any) -> Job:
    request = parse_chat_request({"model": model, "messages": USER, **body})
    return ChatService(registry).prepare(request, request_id="r1")


def settings(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "q.toml"
    head, _, tail = text.rpartition("#models\n")  # top-level keys go before the [[models]] table
    path.write_text(head + '[[models]]\nname = "m"\npath = "x.gguf"\n' + tail, "utf-8")
    return load_settings(str(path), environ={})


# -- the built-in table ----------------------------------------------------------------------------------
def test_builtin_table() -> None:
    for name in ("qwen-plus", "qwen-flash", "qwen-turbo", "qwen-max", "qwen3-max"):
        assert builtin_policy(name) == AliasPolicy(thinking_default=False, stream_only_thinking=False)
    long_policy = AliasPolicy(thinking_default=False, stream_only_thinking=False, result_format="message")
    assert builtin_policy("qwen-long") == long_policy
    assert builtin_policy("qwen3.5-plus").thinking_default is True  # spec §4.4: Qwen3.5 commercial thinks
    assert builtin_policy("qwen3.5-plus").stream_only_thinking is False
    for name in OPEN_SOURCE_TEXT:
        # the family's thinking defaults; the native protocol's message format and incremental output
        assert builtin_policy(name) == AliasPolicy(result_format="message", incremental_output=True)
    assert builtin_policy("qwen-vl-max").route == "vision"
    assert builtin_policy("qwen3-vl-8b-instruct").route == "vision"  # any qwen-vl-*/qwen3-vl-* name
    assert builtin_policy("my-model") == AliasPolicy()
    assert {"qwen-plus", "qwen3-8b", "qwen3-32b"} <= set(DEFAULT_TEXT_ALIASES)
    assert set(COMMERCIAL_TEXT).isdisjoint(OPEN_SOURCE_TEXT)


# -- requests under each name on a hybrid Qwen3 model ---------------------------------------------------
def test_commercial_name_answers_without_thinking_and_non_streaming() -> None:
    registry = ModelRegistry([served()])
    job = prepare(registry, "qwen-plus")
    assert not job.is_thinking and job.request.model == "qwen-plus"
    assert prepare(registry, "qwen-plus", enable_thinking=True).is_thinking  # commercial: non-streaming thinking ok


def test_open_source_name_thinks_and_is_stream_only() -> None:
    registry = ModelRegistry([served()])
    assert prepare(registry, "qwen3-8b", stream=True).is_thinking
    assert prepare(registry, "m", stream=True).is_thinking
    with pytest.raises(ServeError, match=STREAM_ONLY):
        prepare(registry, "qwen3-8b")
    assert not prepare(registry, "qwen3-8b", enable_thinking=False).is_thinking


def test_policy_sampling_over_the_model() -> None:
    policy = AliasPolicy(thinking_default=True, sampling_thinking=SamplingOverrides(temperature=0.3))
    registry = ModelRegistry([served()], [("qwen-plus", policy)])
    # A policy given to the registry is the whole row (config.py merges [alias_policy] over the built-in one):
    # here stream_only_thinking is the model's, so a thinking call must stream.
    with pytest.raises(ServeError, match=STREAM_ONLY):
        prepare(registry, "qwen-plus")
    job = prepare(registry, "qwen-plus", stream=True)
    assert job.is_thinking
    assert job.generation.sampling[0].temperature == 0.3


# -- vision routing ------------------------------------------------------------------------------------
def test_vision_names_route_to_the_vision_model() -> None:
    registry = ModelRegistry([served(), served("vl", aliases=(), vision=True)])
    assert registry.resolve("qwen-vl-plus").name == "vl"
    assert registry.resolve("qwen3-vl-235b-a22b-instruct").name == "vl"
    assert {n for n, m in registry.names() if m.name == "vl"} >= {"vl", "qwen-vl-max", "qwen3-vl-plus"}


def test_vision_name_without_a_vision_model_is_404_saying_how() -> None:
    registry = ModelRegistry([served()])
    with pytest.raises(ModelNotFound) as err:
        registry.resolve("qwen-vl-max")
    assert err.value.status == 404 and "mmproj" in err.value.message and "qwen-vl-max" in err.value.message
    assert "qwen-vl-max" not in {n for n, _ in registry.names()}


# -- omni and translation names ----------------------------------------------------------------------
def test_omni_and_mt_names_reach_the_default_model() -> None:
    registry = ModelRegistry([served(), served("other", aliases=())])
    for name in ("qwen-omni-turbo", "qwen3-omni-flash-2025-12-01", "qwen-mt-plus"):
        assert registry.resolve(name).name == "m"
        assert not prepare(registry, name).is_thinking  # without thinking by default, non-streaming works
    assert {"qwen-omni-turbo", "qwen-mt-turbo"} <= {n for n, _ in registry.names()}
    audio = {"modalities": ["text", "audio"], "audio": {"voice": "Cherry", "format": "wav"}, "stream": True}
    with pytest.raises(ServeError, match="does not support audio output"):  # a service without a speech engine
        prepare(registry, "qwen-omni-turbo", **audio)
    job = prepare(registry, "qwen-mt-plus", translation_options={"source_lang": "auto", "target_lang": "English"})
    assert job.request.translation_options is None and job.request.messages[0].role == "system"
    with pytest.raises(ModelNotFound):
        registry.resolve("qwen-omnibus")


# -- config -------------------------------------------------------------------------------------------
def test_config_overrides_per_alias(tmp_path: Path) -> None:
    text = (
        '[alias_policy."qwen-plus"]\nthinking_default = true\n'
        '[alias_policy."qwen3-8b"]\nstream_only_thinking = false\n'
        '[alias_policy."qwen3-8b".sampling]\ntemperature = 0.2\n'
        '[alias_policy.my-vl]\nroute = "vision"\n'
        '[alias_policy."qwen-max"]\nresult_format = "message"\nincremental_output = true\n'
    )
    aliases = dict(settings(tmp_path, text).alias_policy)
    assert aliases["qwen-plus"] == AliasPolicy(thinking_default=True, stream_only_thinking=False)  # over built-in
    assert aliases["qwen3-8b"].sampling.temperature == 0.2 and aliases["qwen3-8b"].stream_only_thinking is False
    assert aliases["my-vl"].route == "vision"
    assert aliases["qwen-max"].result_format == "message" and aliases["qwen-max"].incremental_output is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[alias_policy."qwen-plus"]\nthinking = true\n', "unknown keys: 'thinking'"),
        ('[alias_policy."qwen-plus"]\nthinking_default = "no"\n', "must be true or false"),
        ('[alias_policy."qwen-plus"]\nroute = "audio"\n', "route: must be one of default, vision"),
        ('[alias_policy."qwen-plus"]\nresult_format = "xml"\n', 'result_format: must be "text" or "message"'),
        ('[alias_policy."qwen-plus".sampling]\ntemp = 1\n', "unknown keys: 'temp'"),
        ("alias_policy = 3\n#models\n", "[alias_policy]: must be a table of tables"),
    ],
)
def test_config_errors_name_the_key_and_the_file(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, text)
    assert problem in str(err.value) and str(err.value).startswith(str(tmp_path / "q.toml"))


def test_configured_unlisted_name_routes_to_the_first_model(tmp_path: Path) -> None:
    registry = ModelRegistry([served(aliases=())], [("house-model", AliasPolicy(thinking_default=False))])
    assert registry.resolve("house-model").name == "m"
    assert not prepare(registry, "house-model").is_thinking
    with pytest.raises(ModelNotFound):
        registry.resolve("qwen-plus")  # a config file that lists no alias gets none


# -- GET /models ------------------------------------------------------------------------------------------
def test_models_route_shows_each_policy() -> None:
    registry = ModelRegistry([served()])
    metrics = Metrics(lambda: [], {n: m.name for n, m in registry.names()})
    client = TestClient(create_app(ChatService(registry), KeyStore([]), metrics, None))
    data = {m["id"]: m for m in client.get("/compatible-mode/v1/models").json()["data"]}
    plus, eight = data["qwen-plus"], data["qwen3-8b"]
    assert plus["policy"]["thinking_default"] is False and plus["capabilities"]["thinking_default"] is False
    assert not plus["capabilities"]["stream_only_thinking"]
    assert eight["policy"]["thinking_default"] is None and eight["capabilities"]["thinking_default"] is True
    assert eight["capabilities"]["stream_only_thinking"]
    one = client.get("/compatible-mode/v1/models/qwen-plus").json()
    assert one["policy"] == plus["policy"] and one["root"] == "m"
