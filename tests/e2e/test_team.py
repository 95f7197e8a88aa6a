"""A team's server, on SQLite and on a real PostgreSQL: keys created, updated and revoked (by the CLI and
the admin API) take effect on the next request; a key limited to N requests a minute gets N answers, then
DashScope's 429 with its headers, while another key is unaffected; admin endpoints refuse other keys."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qwenhost.cli import main
from tests.support.postgres import Cluster
from tests.support.server import RunningServer, running_server
from tests.support.stores import BACKENDS, new_store_url, pg_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

CHAT = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def team_config(url: str) -> str:
    # A second may use a whole minute's requests: the limit test counts requests, not bursts.
    return f'[store]\nurl = "{url}"\nmetrics_keys = ["dev"]\n\n[limits]\nburst_factor = 60.0\n'


def cli_key(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``qwenhost keys create …`` against the store; the plain key it prints once."""
    capsys.readouterr()
    assert main(["keys", "create", *args, "--db", url]) == 0
    name, _, key = capsys.readouterr().out.strip().partition(": ")
    assert key.startswith("sk-"), name
    return key


@dataclass
class Team:
    server: RunningServer
    url: str
    admin: str

    def chat(self, key: str | None, body: dict[str, object] | None = None, path: str = "") -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        target = self.server.root + (path or "/compatible-mode/v1/chat/completions")
        return httpx.post(target, json=body or CHAT, headers=headers, timeout=120)

    def admin_call(self, method: str, path: str, key: str | None = None, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.admin}"}
        return httpx.request(method, f"{self.server.root}/admin/v1{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=BACKENDS)
def team(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp(f"team-{request.param}")
    url = new_store_url(str(request.param), tmp, request)
    admin = _create_admin(url)
    with running_server(tmp, ("--context-length", "2048"), config=team_config(url)) as server:
        yield Team(server, url, admin)


def _create_admin(url: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["keys", "create", "root", "--admin", "--db", url]) == 0
    return out.getvalue().strip().partition(": ")[2]


def test_keys_models_and_revocation(team: Team, capsys: pytest.CaptureFixture[str]) -> None:
    assert team.chat(None).status_code == 401 and team.chat("sk-unknown").status_code == 401
    created = team.admin_call("POST", "/keys", json={"name": "dev", "models": ["qwen-plus"]})
    assert created.status_code == 201, created.text
    dev = created.json()["key"]
    assert team.chat(dev).status_code == 200
    # Only the models it was given, by the name it was given (qwen-max is the same served model here).
    denied = team.chat(dev, {**CHAT, "model": "qwen-max"})
    assert denied.status_code == 403
    assert denied.json()["error"] | {"param": None} == {
        "code": "Model.AccessDenied",
        "message": "Model access denied.",
        "type": "invalid_request_error",
        "param": None,
    }
    assert team.admin_call("PATCH", "/keys/dev", json={"models": None}).json()["models"] is None
    assert team.chat(dev, {**CHAT, "model": "qwen-max"}).status_code == 200
    # The CLI and the server share the store: a change made while it runs holds from the next request.
    assert main(["keys", "update", "dev", "--models", "qwen-plus", "--db", team.url]) == 0
    assert team.chat(dev, {**CHAT, "model": "qwen-max"}).status_code == 403
    # An ordinary key sees nothing about others.
    for path in ("/keys", "/usage"):
        refused = team.admin_call("GET", path, key=dev)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "access_denied"
        assert "root" not in refused.text
    assert team.admin_call("DELETE", "/keys/dev").json()["revoked"] is not None
    assert team.chat(dev).status_code == 401  # the very next request
    ci = cli_key(team.url, capsys, "ci")
    assert team.chat(ci).status_code == 200
    assert main(["keys", "revoke", "ci", "--db", team.url]) == 0
    assert team.chat(ci).status_code == 401
    listed = {k["name"]: k for k in team.admin_call("GET", "/keys").json()["data"]}
    assert listed["root"]["admin"] and listed["dev"]["revoked"] and listed["ci"]["revoked"]
    assert "key" not in listed["root"] and "digest" not in listed["root"]  # never shown again


def _wait_for_a_fresh_minute(needed_s: float = 20.0) -> None:
    """Windows are per clock minute: start where the whole test fits in one."""
    left = 60 - time.time() % 60
    if left < needed_s:
        time.sleep(left + 0.2)


def test_requests_per_minute_limit(team: Team) -> None:
    limited = team.admin_call("POST", "/keys", json={"name": "limited", "rpm": 3}).json()["key"]
    other = team.admin_call("POST", "/keys", json={"name": "other"}).json()["key"]
    _wait_for_a_fresh_minute()
    answers = [team.chat(limited) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    refused = team.chat(limited)
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == {
        "code": "Throttling.RateQuota",
        "param": None,
        "message": "Requests rate limit exceeded, please try again later.",
        "type": "limit_requests",
    }
    assert body["request_id"] and refused.headers["x-request-id"] == body["request_id"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    native = team.chat(limited, {"model": "qwen-plus", "input": {"messages": CHAT["messages"]}}, NATIVE)
    assert native.status_code == 429 and native.json()["code"] == "Throttling.RateQuota"
    assert team.chat(other).status_code == 200  # another key: its own windows, and none limited
    assert "x-ratelimit-limit-requests" not in team.chat(other).headers
    metrics = httpx.get(f"{team.server.root}/metrics", timeout=10).text
    assert 'qwenhost_key_requests_total{key="other",status="429"}' in metrics  # only configured names: "dev"
    assert 'key="limited"' not in metrics


NATIVE = "/api/v1/services/aigc/text-generation/generation"


def test_usage_endpoint_and_cli(team: Team, capsys: pytest.CaptureFixture[str]) -> None:
    key = team.admin_call("POST", "/keys", json={"name": "reporter"}).json()["key"]
    assert team.chat(key).status_code == 200
    assert team.chat(key, {**CHAT, "model": "no-such-model"}).status_code == 404
    rows = [r for r in team.admin_call("GET", "/usage").json()["data"] if r["key"] == "reporter"]
    assert len(rows) == 2  # the served model, and "-" for a name nothing answers
    served = next(r for r in rows if r["model"] != "-")
    assert served["requests"] == 1 and served["errors"] == 0 and served["completion_tokens"] > 0
    assert next(r for r in rows if r["model"] == "-")["errors"] == 1
    capsys.readouterr()
    assert main(["usage", "--db", team.url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "day",
        "key",
        "model",
        "requests",
        "errors",
        "prompt",
        "cached",
        "completion",
        "reasoning",
        "media",
        "total",
    ]
    line = next(x.split() for x in table if x.split()[1:3] == ["reporter", served["model"]])
    assert line[3:5] == ["1", "0"] and int(line[7]) == served["completion_tokens"]
    assert main(["usage", "--json", "--db", team.url]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == team.admin_call("GET", "/usage").json()["data"]
    assert team.admin_call("GET", "/usage", params={"since": "tomorrow"}).status_code == 400


def test_store_down_refuses_with_503_then_recovers(pg_cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    """A store that cannot answer: requests are refused (503), not served unrecorded; then they resume."""
    import psycopg

    url = pg_cluster.new_database()
    database = url.rsplit("/", 1)[1]
    config = f'[store]\nurl = "{url}"\ntimeout_s = 2\n'
    with running_server(tmp_path, ("--context-length", "2048"), config=config) as server:
        team = Team(server, url, admin="")
        assert team.chat("sk-any").status_code == 200  # no keys anywhere: open
        admin = f"host=127.0.0.1 port={pg_cluster.port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
            refused = team.chat("sk-any")
            native = team.chat("sk-any", {"model": "qwen-plus", "input": {"messages": CHAT["messages"]}}, NATIVE)
            conn.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["message"] == "The key and usage store is unavailable, please try again later."
        assert native.status_code == 503 and native.json()["code"] == "ServiceUnavailable"
        assert team.chat("sk-any").status_code == 200
