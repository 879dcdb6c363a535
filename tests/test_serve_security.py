"""weighter serve for a team (weighter.serve.guard): every route needs the token, writes come
from the app's own pages, foreign Host names are refused, a read-only server writes nothing,
every answer carries the security headers, and the access log never holds the token."""

import logging
import re
import shutil
import sqlite3

import pytest

pytest.importorskip("fastapi", reason="weighter serve needs the serve extra: pip install 'weighter[serve]'")
from fastapi.routing import APIRoute  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from weighter.serve import create_app  # noqa: E402

TOKEN = "team-token-0123456789abcdefgh"
BASE = "http://127.0.0.1:8000"


@pytest.fixture
def served(corpus_store, tmp_path):
    """An app on a copy of the test store (it may be written), with a token: (app, store dir)."""
    store_dir, audio, model, _ = corpus_store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    app = create_app(copy, root=audio, model=model, token=TOKEN, allowed_hosts=["calls.example.org"])
    yield app, copy
    app.state.weighter.store.close()


def _speakers(store_dir) -> list:
    with sqlite3.connect(store_dir / "store.sqlite") as db:
        return db.execute("SELECT * FROM speakers").fetchall()


def _every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, path parameters filled in: a route added later
    is walked too."""
    out = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            out += [(method, path) for method in sorted(route.methods - {"HEAD"})]
        elif isinstance(route, Mount):
            out.append(("GET", route.path + "/app.js"))
        elif getattr(route, "path", None):
            out.append(("GET", route.path))
    return out


def test_without_the_token_every_route_answers_401_and_sends_no_data(served):
    app, store_dir = served
    routes = _every_route(app)
    assert {("GET", "/"), ("GET", "/api/info"), ("GET", "/api/audio/1"), ("POST", "/api/groups/1/name"),
            ("GET", "/static/app.js"), ("GET", "/api/openapi.json")} <= set(routes)
    with TestClient(app, base_url=BASE) as c:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong-token-0000000000000"}, {"Cookie": "weighter_token=x"}):
                r = c.request(method, path, headers=headers, params={"q": "conv"})
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert str(store_dir) not in r.text and "conv_" not in r.text and "function" not in r.text
                assert len(r.content) < 300, (method, path)
        assert c.get("/api/info", params={"token": "wrong"}).status_code == 401
        assert c.get("/api/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()["files"] == 6


def test_the_token_in_the_address_becomes_a_strict_cookie_and_leaves_the_address(served):
    app, _ = served
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        first = c.get("/", params={"token": TOKEN, "x": "1"})
        assert first.status_code == 303 and first.headers["location"] == "/?x=1"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"weighter_token={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        page = c.get("/")  # the client kept the cookie
        assert page.status_code == 200 and "/static/app.js" in page.text
        audio = c.get("/api/audio/1")
        assert audio.status_code in (200, 404)  # the cookie opens audio too (file 1 exists, or not)
        assert c.get(f"/api/audio/{_a_file_id(c)}").status_code == 200


def _a_file_id(c) -> int:
    return c.get("/api/files").json()["files"][0]["id"]


def test_a_cross_origin_write_with_a_valid_cookie_is_refused_and_changes_nothing(served):
    app, store_dir = served
    with TestClient(app, base_url=BASE, cookies={"weighter_token": TOKEN}) as c:
        group = c.get("/api/groups").json()["groups"][0]["id"]
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Referer": "http://evil.example/page"}, {}):  # no Origin: not from our pages
            r = c.post(f"/api/groups/{group}/name", data={"name": "Mallory"}, headers=headers)
            assert r.status_code == 403, (headers, r.text)
            assert _speakers(store_dir) == []
        upload = c.post("/api/query", files={"file": ("x.wav", b"RIFF")}, headers={"Origin": "http://evil.example"})
        assert upload.status_code == 403
        ok = c.post(f"/api/groups/{group}/name", data={"name": "Alice"}, headers={"Origin": BASE})
        assert ok.status_code == 200 and [r[1] for r in _speakers(store_dir)] == ["Alice"]
    with TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {TOKEN}"}) as c:  # a script
        renamed = c.post(f"/api/groups/{group}/name", data={"name": "Bob"})
        assert renamed.status_code == 400 and "already named" in renamed.json()["error"]


def test_a_foreign_host_is_refused_even_with_the_token(served):
    app, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app, base_url=BASE) as c:
        for host in ("evil.example:8000", "attacker.localhost.evil.example", "localhost.evil"):
            r = c.get("/api/info", headers=auth | {"Host": host})
            assert r.status_code == 403 and "DNS rebinding" in r.json()["error"], host
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.0.0.7", "calls.example.org",
                     "CALLS.example.org:443"):
            assert c.get("/api/info", headers=auth | {"Host": host}).status_code == 200, host


def test_a_read_only_server_refuses_every_write(corpus_store, tmp_path):
    store_dir, audio, model, extra = corpus_store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    app = create_app(copy, root=audio, model=model, token=TOKEN, read_only=True)
    with TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {TOKEN}", "Origin": BASE}) as c:
        assert c.get("/api/info").json()["read_only"] is True
        named = c.post("/api/groups/0/name", data={"name": "Alice"})
        assert named.status_code == 403 and "read-only" in named.json()["error"]
        with open(extra[0], "rb") as handle:
            upload = c.post("/api/query", files={"file": ("a.flac", handle.read())})
        assert upload.status_code == 403
        assert c.delete("/api/groups/0/name").status_code == 403
        assert c.get("/api/groups").status_code == 200 and c.get(f"/api/audio/{_a_file_id(c)}").status_code == 200
    assert _speakers(copy) == []
    app.state.weighter.store.close()


def test_every_answer_carries_the_security_headers(served):
    app, _ = served
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        answers = [c.get("/"), c.get("/api/info"), c.get("/api/info", headers={"Host": "evil.example"}),
                   c.get("/static/app.js", headers={"Authorization": f"Bearer {TOKEN}"}),
                   c.get("/api/nothing", headers={"Authorization": f"Bearer {TOKEN}"}),
                   c.get("/", params={"token": TOKEN})]
        assert [a.status_code for a in answers] == [401, 401, 403, 200, 404, 303]
        for a in answers:
            policy = a.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert "frame-ancestors 'none'" in policy
            assert a.headers["x-content-type-options"] == "nosniff"
            assert a.headers["referrer-policy"] == "same-origin" and a.headers["x-frame-options"] == "DENY"
        page = c.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert "<script>" not in page and "<script src=" in page and " on" not in page.split("<body")[1].split(">")[0]


def test_one_access_log_line_per_request_never_with_the_token(served, caplog):
    app, _ = served
    with caplog.at_level(logging.INFO, logger="weighter.serve.access"), TestClient(app, base_url=BASE) as c:
        c.get("/api/info")
        c.get("/api/info", params={"token": TOKEN, "k": "3"})
        c.get("/api/files", headers={"Authorization": f"Bearer {TOKEN}"})
    lines = [r.getMessage() for r in caplog.records if r.name == "weighter.serve.access"]
    assert len(lines) == 3
    assert '"GET /api/info" 401' in lines[0] and '"GET /api/info" 200' in lines[1] and '"GET /api/files" 200' in lines[2]
    assert all(TOKEN not in line and "token" not in line for line in lines)
    assert all(re.match(r"^\S+ \"GET /api/\w+\" \d{3} \d+ ms$", line) for line in lines)


def test_without_a_token_the_host_and_origin_checks_still_hold(corpus_store):
    store_dir, audio, model, _ = corpus_store
    app = create_app(store_dir, root=audio, model=model)
    with TestClient(app, base_url=BASE) as c:
        assert c.get("/api/info").status_code == 200
        assert c.get("/api/info", headers={"Host": "evil.example"}).status_code == 403
        assert c.post("/api/groups/0/name", data={"name": "M"}, headers={"Origin": "http://evil.example"}).status_code == 403
    app.state.weighter.store.close()
