"""PrefixAffinityRouter: the prefix-affinity policy (policy.py) on Ray Serve's public RequestRouter API.

Ray Serve LLM ships a PrefixCacheAffinityRouter, but only under ray.llm._internal (private) or behind
ray[llm], which pins vLLM; this one needs ray[serve] alone. It runs inside the ingress's deployment
handle: each ingress replica keeps its own picture of the engine replicas' caches (one ingress replica,
the default, sees every request).
"""

from __future__ import annotations

from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from qwenhost.deploy.ray.policy import PolicyConfig, PrefixAffinityPolicy


def _text(request: PendingRequest | None) -> str:
    """``routing_text`` of the handle call's first argument (a ForwardedRequest); "" for anything else."""
    if request is None or not request.args:
        return ""
    text = getattr(request.args[0], "routing_text", "")
    return text if isinstance(text, str) else ""


# Rounds in which a request is offered to its preferred replica alone before the others are offered too.
# Ray moves to the next rank at once when a replica misses its queue-length probe deadline (0.1 s at
# first), which a replica busy prefilling on a loaded machine does: that would break affinity for
# nothing. Ray backs off and lengthens the deadline between rounds; a replica that is really full or
# gone is passed over after these.
AFFINITY_ROUNDS = 3
_MAX_TRACKED = 10_000  # requests being routed at once; past it the oldest counts are dropped


class PrefixAffinityRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        """``request_router_kwargs`` of RequestRouterConfig: PolicyConfig's fields."""
        self.policy = PrefixAffinityPolicy(PolicyConfig(**kwargs))
        self._rounds: dict[str, int] = {}  # internal request id -> rounds offered so far

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        cache = self.replica_queue_len_cache
        lengths = {rid: cache.get(r.replica_id) or 0 for rid, r in by_id.items()}
        ranked = [by_id[rid] for rid in self.policy.rank(_text(pending_request), lengths)]
        if pending_request is None or len(ranked) < 2:
            return [ranked]
        key = pending_request.metadata.internal_request_id
        if len(self._rounds) >= _MAX_TRACKED:
            self._rounds.pop(next(iter(self._rounds)))
        rounds = self._rounds[key] = self._rounds.get(key, 0) + 1
        if rounds <= AFFINITY_ROUNDS:
            return [ranked[:1]]
        return [ranked[:1], ranked[1:]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        self._rounds.pop(pending_request.metadata.internal_request_id, None)
        text = _text(pending_request)
        if text:
            self.policy.record(text, replica_id.unique_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self.policy.retain(r.replica_id.unique_id for r in replicas)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.policy.retain(rid.unique_id for rid in self.curr_replicas if rid.unique_id != replica_id.unique_id)
