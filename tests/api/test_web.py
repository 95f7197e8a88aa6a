"""The playground's files as served (api/routes/web.py): types, the strict CSP the page must live under, no
key needed for the page itself, and the packaging that ships the files with a non-editable install."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from importlib import resources

import pytest

from qwenhost.api.routes.web import ASSETS, CSP
from tests.api.test_contract import make_client
from tests.support.server import REPO

PAGE_FILES = {"/": "text/html; charset=utf-8", "/web/app.js": "text/javascript; charset=utf-8"}
PAGE_FILES["/web/app.css"] = "text/css; charset=utf-8"


def page_text(name: str) -> str:
    return resources.files("qwenhost.web").joinpath(name).read_text("utf-8")


@pytest.mark.parametrize(("path", "media_type"), PAGE_FILES.items())
def test_files_are_served_with_their_type_and_the_csp(path: str, media_type: str) -> None:
    response = make_client().get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"


def test_csp_allows_nothing_inline_and_nothing_foreign() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in CSP
    assert directives["frame-ancestors"] == "'none'"


def test_the_page_needs_no_key_but_the_api_still_does() -> None:
    client = make_client(keys=("sk-team",))
    for path in PAGE_FILES:
        assert client.get(path).status_code == 200, path
    assert client.get("/compatible-mode/v1/models").status_code == 401
    assert client.get("/compatible-mode/v1/models", headers={"Authorization": "Bearer sk-team"}).status_code == 200


def test_other_files_under_web_are_not_found() -> None:
    response = make_client().get("/web/index.html")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_has_nothing_the_csp_would_block() -> None:
    html = page_text("index.html")
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # inline scripts
    assert re.findall(r"\sstyle=|<style|\son[a-z]+=", html) == []  # inline styles and handlers
    assert re.findall(r"(?:src|href)=\"(?:https?:)?//", html) == []  # nothing from elsewhere
    assert "http://" not in page_text("app.js") and "https://" not in page_text("app.js")


def test_every_element_the_script_uses_is_in_the_page() -> None:
    ids = set(re.findall(r'\bid="([^"]+)"', page_text("index.html")))
    used = set(re.findall(r'\$\("([^"]+)"\)', page_text("app.js")))
    assert used, "the script reads no element: the pattern no longer matches"
    assert used - ids == set()


def test_labels_point_at_elements() -> None:
    html = page_text("index.html")
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    targets = set(re.findall(r'<label for="([^"]+)"', html))
    assert targets - ids == set()
    for control in re.findall(r'<(?:textarea|select|input)[^>]*\bid="([^"]+)"', html):
        # every control is named: by <label for>, or by a <label> wrapped around it
        assert control in targets or re.search(rf'<label class="inline"><input id="{control}"', html), control


def test_package_data_ships_every_file() -> None:
    """A non-editable ``pip install .`` copies only what [tool.setuptools.package-data] names."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["qwenhost.web"]
    for name in ASSETS:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
