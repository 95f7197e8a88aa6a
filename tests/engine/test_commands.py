"""Typed deliveries: an error is told apart from output without looking inside it."""

from __future__ import annotations

from qwenhost.core.errors import InternalError
from qwenhost.core.types import CacheReport
from qwenhost.engine.llamacpp.commands import Delivery
from qwenhost.engine.protocol import PromptDone, StepOut


def test_a_delivery_says_whether_it_is_an_error() -> None:
    assert Delivery("r", InternalError()).is_error
    assert not Delivery("r", StepOut(())).is_error
    assert not Delivery("r", PromptDone(3, CacheReport())).is_error
