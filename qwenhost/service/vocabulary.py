"""Each model's grammar vocabulary, waited for with a bound: a request never hangs on the build."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from qwenhost.core.errors import InternalError, ServiceUnavailable
from qwenhost.engine.protocol import Backend, GrammarVocabulary
from qwenhost.service.models import ServedModel

# The backend builds the vocabulary beside start-up (about a second for 150k tokens); a request that needs
# a grammar before then waits this long at most, then gets a 503 it can retry.
GRAMMAR_VOCABULARY_WAIT_S = 30.0
NOT_READY = (
    "The model `{}` cannot apply response_format or tool grammars yet: its grammar vocabulary is still "
    "being built. Please try again shortly."
)
FAILED = "The grammar vocabulary of model `{}` could not be built; see the server log."


class VocabularyGate:
    """``get(model)`` returns the backend's ``grammar_vocabulary()``. The backend call blocks until the
    vocabulary is built, so one thread per model makes it, once; requests wait on its result with a
    bound, and a request that gives up leaves no thread behind."""

    def __init__(self, wait_s: float = GRAMMAR_VOCABULARY_WAIT_S) -> None:
        self.wait_s = wait_s
        self._futures: dict[str, Future[GrammarVocabulary | None]] = {}
        self._lock = threading.Lock()

    def get(self, model: ServedModel) -> GrammarVocabulary | None:
        future = self._future(model)
        try:
            return future.result(timeout=self.wait_s)
        except FutureTimeout:
            raise ServiceUnavailable(NOT_READY.format(model.name)) from None
        except Exception as exc:
            raise InternalError(FAILED.format(model.name)) from exc

    def _future(self, model: ServedModel) -> Future[GrammarVocabulary | None]:
        with self._lock:
            future = self._futures.get(model.name)
            if future is None:
                future = Future()
                self._futures[model.name] = future
                thread = threading.Thread(
                    target=_build, args=(model.backend, future), name=f"qwenhost-vocab-{model.name}", daemon=True
                )
                thread.start()
            return future


def _build(backend: Backend, future: Future[GrammarVocabulary | None]) -> None:
    try:
        future.set_result(backend.grammar_vocabulary())
    except BaseException as exc:  # the waiters get it as a 500 with a clear message
        future.set_exception(exc)
