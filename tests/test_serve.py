"""weighter serve: the JSON API against the CLI's --json, audio path safety and range requests,
uploads, and a store written while it is served. A real store of real (TTS) audio, embedded by
the tiny trained model; FastAPI's TestClient and a real uvicorn process."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi", reason="weighter serve needs the serve extra: pip install 'weighter[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from weighter.cli import main  # noqa: E402
from weighter.index import Store  # noqa: E402
from weighter.serve import create_app  # noqa: E402


TOKEN = "test-token-0123456789abcdef"


def _client(app):
    """FastAPI's TestClient on the app, sending the token in a header, as from this machine."""
    return TestClient(app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def client(corpus_store):
    store_dir, audio, model, _ = corpus_store
    app = create_app(store_dir, root=audio, model=model, token=TOKEN)
    with _client(app) as c:
        yield c
    app.state.weighter.store.close()


def _cli_json(*args):
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pages_and_info(client, corpus_store):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    info = client.get("/api/info").json()
    assert info["files"] == 6 and info["latest_run"] == 1
    assert info["read_only"] is False
    assert {k: v for k, v in info.items() if k not in ("latest_run", "read_only")} == _cli_json("index", "info", "--store",
                                                                             str(corpus_store[0]))


def test_files_are_found_by_name(client, corpus_store):
    everything = client.get("/api/files").json()
    assert everything["total"] == 6 and len(everything["files"]) == 6
    first = everything["files"][0]
    found = client.get("/api/files", params={"q": first["name"]}).json()
    assert [f["id"] for f in found["files"]] == [first["id"]] and found["total"] == 1
    assert client.get("/api/files", params={"q": "%"}).json()["total"] == 0  # LIKE's wildcards are literal
    assert client.get("/api/files", params={"q": "no-such-file"}).json() == {"files": [], "total": 0}


def test_query_of_a_stored_file_is_the_cli_query(client, corpus_store):
    store_dir = corpus_store[0]
    file = client.get("/api/files").json()["files"][2]
    answer = client.get("/api/query", params={"file_id": file["id"], "k": 4}).json()
    cli = _cli_json("query", file["path"], "--store", str(store_dir), "-k", "4")
    assert answer["query"]["stored"] and answer["query"]["file_id"] == file["id"]
    assert {k: v for k, v in answer["query"].items() if k not in ("file_id", "stored")} == cli["query"]
    for mine, theirs in zip(answer["results"], cli["results"], strict=True):
        extra = {k: mine.pop(k) for k in ("file_id", "duration")}
        assert json.loads(json.dumps(mine)) == theirs
        assert client.get("/api/files", params={"q": os.path.basename(theirs["file"])}).json()["files"][0]["id"] \
            == extra["file_id"]
    assert client.get("/api/query", params={"file_id": 999}).status_code == 404
    bad_slot = client.get("/api/query", params={"file_id": file["id"], "slot": 99})
    assert bad_slot.status_code == 422 and "slot 99" in bad_slot.json()["error"]


def test_file_page_gives_set_groups_and_nearest(client):
    file = client.get("/api/files").json()["files"][0]
    page = client.get(f"/api/files/{file['id']}").json()
    assert page["file"]["id"] == file["id"] and page["run"] == 1
    s = page["set"]
    assert len(s["weightings"]) == len(s["slots"]) and all(len(w) > 0 for w in s["weightings"])
    active = {x["slot"] for x in s["slots"] if x["active"]}
    assert {g["slot"] for g in page["slot_groups"]} == active  # each active slot was clustered
    assert page["nearest"]["query"]["file_id"] == file["id"]
    assert file["id"] not in [m["file_id"] for m in page["nearest"]["results"]]


def test_groups_are_the_cli_cluster_run(client, corpus_store):
    cli = _cli_json("cluster", "--store", str(corpus_store[0]), "--run", "1")
    groups = client.get("/api/groups").json()
    assert groups["run"] == cli["run"]
    assert [(g["id"], g["size"], g["files"]) for g in groups["groups"]] == \
        [(g["id"], g["size"], g["files"]) for g in cli["groups"]]
    summary = client.get("/api/groups", params={"members": "false"}).json()
    assert all("members" not in g and g["examples"] for g in summary["groups"])
    assert summary["outliers"] == len(cli["outliers"])
    first = cli["groups"][0]
    one = client.get(f"/api/groups/{first['id']}").json()["group"]
    assert [(m["file"], m["slot"], m["spans"]) for m in one["members"]] == \
        [(m["file"], m["slot"], m["spans"]) for m in first["members"]]
    assert all(m["file_id"] is not None for m in one["members"])
    assert client.get("/api/groups/9999").status_code == 404
    assert client.get("/api/groups", params={"run": 77}).status_code == 404
    png = client.get("/api/groups/map.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_audio_is_served_with_range_requests(client):
    file = client.get("/api/files").json()["files"][1]
    data = open(file["path"], "rb").read()
    whole = client.get(f"/api/audio/{file['id']}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/flac" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/audio/{file['id']}", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    tail = client.get(f"/api/audio/{file['id']}", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    beyond = client.get(f"/api/audio/{file['id']}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


@pytest.mark.parametrize("path", ["/api/audio/../../../../etc/passwd", "/api/audio/..%2F..%2F..%2Fetc%2Fpasswd",
                                  "/api/audio/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/audio//etc/passwd",
                                  "/api/audio/%2Fetc%2Fpasswd", "/api/audio/1%2F..%2F..%2Fetc%2Fpasswd",
                                  "/api/audio/-1", "/api/audio/999999"])
def test_audio_refuses_anything_but_a_stored_file_id(client, path):
    import httpx

    # sent as written: no client-side normalisation of '..'
    response = client.send(client.build_request("GET", httpx.URL("http://127.0.0.1", raw_path=path.encode())))
    assert response.status_code in (404, 422)
    assert b"root:" not in response.content


def _store_of(tmp_path, files: dict, basis):
    """A store holding these files (name -> path) with made-up embedding sets; audio bytes are
    all the app serves of them."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_index import make_set

    s = Store(tmp_path / "store", create=True)
    with s.writing():
        s.apply([(make_set(p, [i], basis, seed=i), f"h{i}") for i, p in enumerate(files.values())])
    s.close()
    return tmp_path / "store"


def test_audio_refuses_symlinks_and_files_outside_the_root(tmp_path):
    basis = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))[0].astype(np.float32)
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    corpus.mkdir()
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"RIFF secret")
    files = {"a": corpus / "a.wav", "b": corpus / "b.wav", "far": outside / "far.wav"}
    for p in files.values():
        p.write_bytes(b"RIFF audio " + p.name.encode())
    store_dir = _store_of(tmp_path, files, basis)
    app = create_app(store_dir, root=corpus, token=TOKEN)
    with _client(app) as c:
        ids = {f["name"]: f["id"] for f in c.get("/api/files").json()["files"]}
        assert c.get(f"/api/audio/{ids['a.wav']}").content == b"RIFF audio a.wav"
        # a stored file replaced by a symlink to a file out of the corpus
        files["b"].unlink()
        files["b"].symlink_to(outside / "secret.wav")
        refused = c.get(f"/api/audio/{ids['b.wav']}")
        assert refused.status_code == 403 and b"secret" not in refused.content and "symlink" in refused.json()["error"]
        # a stored file outside the corpus root
        far = c.get(f"/api/audio/{ids['far.wav']}")
        assert far.status_code == 403 and "outside the corpus root" in far.json()["error"]
        # a stored file gone from disk
        files["a"].unlink()
        assert c.get(f"/api/audio/{ids['a.wav']}").status_code == 404
    app.state.weighter.store.close()
    # a folder above the files replaced by a symlink: every stored path now resolves elsewhere
    os.rename(corpus, tmp_path / "moved")
    corpus.symlink_to(tmp_path / "moved")
    app = create_app(store_dir, token=TOKEN)
    with _client(app) as c:
        assert c.get(f"/api/audio/{ids['a.wav']}").status_code == 403
    app.state.weighter.store.close()


def test_uploads_are_embedded_checked_and_never_stored(corpus_store, tmp_path):
    store_dir, audio, model, extra = corpus_store
    app = create_app(store_dir, root=audio, model=model, upload_limit=2**20, token=TOKEN)
    before = Store(store_dir).info()
    with _client(app) as c:
        with open(extra[0], "rb") as handle:
            answer = c.post("/api/query", files={"file": (extra[0].name, handle, "audio/flac")}, data={"k": "3"})
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["query"]["file"] == extra[0].name and not result["query"]["stored"]
        assert 1 <= len(result["results"]) <= 3 and all(m["file_id"] is not None for m in result["results"])
        # not audio: the reason `weighter embed` gives, naming the upload
        text = c.post("/api/query", files={"file": ("notes.txt", b"these are not sounds " * 50, "text/plain")})
        assert text.status_code == 422
        message = text.json()["error"]
        assert message.startswith("notes.txt: ") and "nothing was stored" in message and "\n" not in message
        assert str(tmp_path) not in message and "weighter-upload" not in message
        same = _write(tmp_path / "notes.bin", b"these are not sounds " * 50)
        embed = CliRunner().invoke(main, ["embed", str(same), "--json"])
        reason = message.removeprefix("notes.txt: ").removesuffix("; nothing was stored")
        assert f"error: {same}: {reason.replace('notes.txt', str(same))}" in embed.stderr
        empty = c.post("/api/query", files={"file": ("../../empty.wav", b"", "audio/wav")})
        assert empty.status_code == 422 and empty.json()["error"].startswith("empty.wav: ")
        big = c.post("/api/query", files={"file": ("big.wav", b"\0" * (2**20 + 1), "audio/wav")})
        assert big.status_code == 413 and big.json()["error"].startswith("big.wav: larger than the upload limit")
        huge = c.post("/api/query", files={"file": ("huge.wav", b"\0" * (3 * 2**20), "audio/wav")})
        assert huge.status_code == 413 and "limit of 1 MiB" in huge.json()["error"]  # by its Content-Length
    app.state.weighter.store.close()
    after = Store(store_dir).info()
    assert after == before  # nothing written


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_a_store_written_while_served_shows_the_new_files(corpus_store, tmp_path):
    import shutil

    from weighter.embedder import Embedder
    from weighter.index import add_files

    store_dir, audio, model, extra = corpus_store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    app = create_app(copy, model=model, token=TOKEN)
    with _client(app) as c:
        assert c.get("/api/info").json()["files"] == 6
        query_id = c.get("/api/files").json()["files"][0]["id"]
        assert c.get("/api/query", params={"file_id": query_id, "k": 10}).status_code == 200  # FAISS loaded
        statuses, writing = [], threading.Event()

        def reader():  # a user of the app while the store is written
            while not writing.is_set():
                statuses.append(c.get("/api/query", params={"file_id": query_id, "k": 10}).status_code)
                statuses.append(c.get("/api/files", params={"limit": 20}).status_code)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            with Store(copy) as writer:  # as `weighter index add` does, beside the app
                add_files(writer, Embedder.load(model), extra)
        finally:
            writing.set()
            thread.join()
        assert statuses and set(statuses) == {200}
        assert c.get("/api/info").json()["files"] == 8
        names = [f["name"] for f in c.get("/api/files").json()["files"]]
        assert {p.name for p in extra} <= set(names)
        new_id = c.get("/api/files", params={"q": extra[0].name}).json()["files"][0]["id"]
        assert c.get("/api/query", params={"file_id": new_id}).status_code == 200
        hits = c.get("/api/query", params={"file_id": query_id, "k": 10}).json()["results"]
        assert len(hits) == 7  # every other file, the new ones included: the new FAISS generation is read
    app.state.weighter.store.close()


def test_cli_serve_warns_on_all_addresses_prints_its_token_and_logs_without_it(corpus_store):
    import httpx

    store_dir = corpus_store[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "weighter.cli", "serve", "--store", str(store_dir),
                               "--host", "0.0.0.0", "--port", str(port)], stderr=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        first = server.stderr.readline()
        assert first.startswith("warning: listening on 0.0.0.0") and "TLS" in first
        address = server.stderr.readline()
        assert f":{port}/?token=" in address
        token = address.split("?token=")[1].split()[0]
        assert len(token) >= 32
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                refused = httpx.get(f"{base}/api/info", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert refused.status_code == 401 and "files" not in refused.text
        info = httpx.get(f"{base}/api/info", params={"token": token}, timeout=5).json()
        assert info["files"] == 6
    finally:
        server.terminate()
        _, rest = server.communicate(timeout=20)
    log = [line for line in rest.splitlines() if '"GET /api/info"' in line]
    assert len(log) == 2 and " 401 " in log[0] and " 200 " in log[1]  # one line per request
    assert token not in rest


def test_cli_serve_refuses_no_token_off_loopback_and_reads_a_token_file(corpus_store, tmp_path, monkeypatch):
    result = CliRunner().invoke(main, ["serve", "--store", str(corpus_store[0]), "--host", "0.0.0.0", "--no-token"])
    assert result.exit_code == 2 and "--no-token is only for a loopback --host" in result.output
    short = tmp_path / "short"
    short.write_text("abc\n")
    result = CliRunner().invoke(main, ["serve", "--store", str(corpus_store[0]), "--token-file", str(short)])
    assert result.exit_code == 1 and "at least 16 characters" in result.stderr
    missing = CliRunner().invoke(main, ["serve", "--store", str(corpus_store[0]), "--token-file",
                                        str(tmp_path / "none")])
    assert missing.exit_code == 1 and "cannot read the token file" in missing.stderr
    import uvicorn

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    good = tmp_path / "token"
    good.write_text("a-token-of-my-own-1234\n")
    result = CliRunner().invoke(main, ["serve", "--store", str(corpus_store[0]), "--token-file", str(good),
                                       "--read-only"])
    assert result.exit_code == 0, result.output
    assert "/?token=a-token-of-my-own-1234" in result.stderr and "read-only" in result.stderr
    assert ran["access_log"] is False  # uvicorn's log would show the query string, token included
    ran["app"].state.weighter.store.close()


def test_cli_serve_without_the_extra_names_the_install_line(corpus_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed: import fails
    result = CliRunner().invoke(main, ["serve", "--store", str(corpus_store[0])])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: weighter serve needs FastAPI and uvicorn (uvicorn is missing): pip install 'weighter[serve]'"]
    monkeypatch.undo()
    missing = CliRunner().invoke(main, ["serve", "--store", "/nonexistent/store"])
    assert missing.exit_code == 1 and "not a weighter store" in missing.stderr


def test_naming_a_group_over_http_refuses_other_origins_and_lists_the_speaker(corpus_store, tmp_path):
    import shutil

    store_dir, audio, model, _ = corpus_store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    app = create_app(copy, root=audio, model=model, token=TOKEN)
    with _client(app) as c:
        group = c.get("/api/groups").json()["groups"][0]
        assert group["name"] is None
        foreign = c.post(f"/api/groups/{group['id']}/name", data={"name": "Alice"},
                         headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "refused" in foreign.json()["error"]
        assert c.get("/api/speakers").json()["speakers"] == []  # nothing written
        ok = c.post(f"/api/groups/{group['id']}/name", data={"name": "Alice", "run": "1"},
                    headers={"Origin": "http://127.0.0.1"})
        assert ok.status_code == 200 and ok.json()["references"] == group["size"]
        again = c.post(f"/api/groups/{group['id']}/name", data={"name": "Bob"})
        assert again.status_code == 400 and "already named 'Alice'" in again.json()["error"]
        assert c.post("/api/groups/999/name", data={"name": "Bob"}).status_code == 400
        listed = c.get("/api/speakers").json()
        assert [s["name"] for s in listed["speakers"]] == ["Alice"]
        assert listed["names"][0]["status"] == "named" and listed["names"][0]["group"] == group["id"]
        assert c.get("/api/groups").json()["groups"][0]["name"] == "Alice"
        page = c.get("/api/speakers/Alice?k=3").json()
        assert page["speaker"]["name"] == "Alice" and page["in_run"]["group"] == group["id"]
        assert page == page | {"query": page["query"]} and len(page["results"]) == 3
        cli = _cli_json("query", "--speaker", "Alice", "--store", str(copy), "-k", "3")
        assert [m["file"] for m in page["results"]] == [m["file"] for m in cli["results"]]
        assert [m["probability"] for m in page["results"]] == [m["probability"] for m in cli["results"]]
        assert all(m["file_id"] is not None for m in page["results"])
        assert c.get("/api/speakers/Nobody").status_code == 404
        member = group["examples"][0] if "examples" in group else group["members"][0]["file"]
        file_id = c.get(f"/api/files?q={member.split('/')[-1]}").json()["files"][0]["id"]
        slots = c.get(f"/api/files/{file_id}").json()["slot_groups"]
        assert "Alice" in {s["name"] for s in slots}
    app.state.weighter.store.close()
