"""Store fixtures: ``store_url`` runs a test on SQLite (a file) and on a real PostgreSQL server; the
PostgreSQL case is skipped only when no PostgreSQL binaries exist (.ci/run installs Debian's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhost.ops.store.database import sqlite_url
from tests.support.postgres import Cluster, pg_bin_dir, postgres_cluster

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb) on this machine: apt-get install postgresql (.ci/run does)")
    with postgres_cluster(bin_dir) as cluster:
        yield cluster


def new_store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return sqlite_url(tmp_path / "store" / "qwenhost.db")
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return new_store_url(str(request.param), tmp_path, request)
