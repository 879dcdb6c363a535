"""The web app: FastAPI routes over a read-only store, and the static pages.

Every page reads the JSON API; each endpoint's answer has the shape of the matching CLI
command's ``--json`` (``weighter query``, ``weighter cluster``, ``weighter embed``,
``weighter index info``), with the stored files' ids added where a page links or plays them.
Routes are plain (``def``) functions: FastAPI runs them on its thread pool, each thread reading
SQLite through its own read-only connection (``Store(read_only=True)``).
"""


import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from weighter.errors import AudioError, WeighterError
from weighter.index import Store, matches_json, query_store
from weighter.serve.audio import Refused, stored_audio
from weighter.serve.guard import Guard

STATIC = Path(__file__).parent / "static"
UPLOAD_LIMIT = 50 * 2**20  # bytes: about 50 min of 16 kHz FLAC, or 26 min of 16-bit 16 kHz WAV
_MULTIPART_SLACK = 64 * 2**10  # bytes a multipart body carries beyond the file (boundaries, fields)


@dataclass
class _State:
    """What the routes share: the store, the upload embedder (loaded on first upload) and caches."""

    store: Store
    root: Path | None
    model: Path | None
    upload_limit: int
    embedder: object = None
    read_only: bool = False  # the app refuses writes (weighter.serve.guard)
    embed_lock: threading.Lock = field(default_factory=threading.Lock)  # one model, one upload at a time
    draw_lock: threading.Lock = field(default_factory=threading.Lock)  # matplotlib is not thread-safe
    runs: dict = field(default_factory=dict)  # (run, members) -> run_result without spans
    maps: dict = field(default_factory=dict)  # (run, members) -> PNG bytes


def create_app(store_dir: str | Path, root: str | Path | None = None, model: str | Path | None = None,
               upload_limit: int = UPLOAD_LIMIT, token: str | None = None, read_only: bool = False,
               allowed_hosts=()):
    """The web app on a store: pages at ``/``, the JSON API under ``/api``.

    Every request passes ``weighter.serve.guard.Guard`` first (host, token, writes, headers,
    access log). Endpoints (docs/serve.md gives every shape):

    - ``GET /api/info``: ``weighter index info --json``, plus ``latest_run``.
    - ``GET /api/files?q=NAME&limit=&offset=``: stored files whose path holds NAME.
    - ``GET /api/files/{id}?k=``: one file's embedding set (``weighter embed --json``), the
      group of each slot in the latest run, and its nearest files (``weighter query --json``).
    - ``GET /api/query?file_id=&k=&slot=``, ``POST /api/query`` (form: ``file``, ``k``):
      ``weighter query --json`` for a stored file (its stored set, no embedding) or an upload
      (embedded, never stored).
    - ``GET /api/groups?run=&members=``: ``weighter cluster --json`` of the latest (or that)
      run, without spans; ``members=false`` leaves the members out (``run_summary``: each group's
      size, files and example files).
    - ``GET /api/groups/{id}?run=``: one group, each member with its spans.
    - ``GET /api/groups/map.png?run=``: the run's 2-D map.
    - ``POST /api/groups/{id}/name`` (form: ``name``, ``run``): ``weighter speaker name``.
    - ``GET /api/speakers``: ``weighter speaker list --json``.
    - ``GET /api/speakers/{name}?k=&min_p=``: the speaker, where its name stands in the latest
      run, and ``weighter query --speaker NAME --json``.
    - ``GET /api/audio/{id}``: a stored file's audio, with HTTP range requests.

    Parameters
    ----------
    store_dir : str or Path
        A store (``weighter index build``); opened read-only.
    root : str, Path or None
        The corpus root: audio is sent only of files inside it. None: any file the store holds.
    model : str, Path or None
        The model that embeds uploads; None: the shipped one. It must be the store's model.
    upload_limit : int, default 50 MiB
        Largest upload, in bytes; a larger one is refused (413) before it is read whole.
    token : str or None
        The token every request must carry (``weighter.serve.guard``; ``new_token()`` makes
        one); None: none needed, for a server only this machine's users reach.
    read_only : bool, default False
        Refuse every write (naming a group, uploads) with 403.
    allowed_hosts : iterable of str
        ``Host`` names accepted besides IP addresses and this machine's names (a reverse proxy's
        public name).

    Returns
    -------
    fastapi.FastAPI
        ``app.state.weighter.store`` is the read-only store (close it when done).

    Raises
    ------
    StoreError
        ``store_dir`` is not a store.

    Examples
    --------
    >>> import uvicorn
    >>> from weighter.serve import create_app
    >>> uvicorn.run(create_app("walk/store"), host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from fastapi import FastAPI, File, Form, Query, UploadFile
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    state = _State(Store(store_dir, read_only=True), Path(root) if root else None, Path(model) if model else None,
                   int(upload_limit))
    # no Swagger page: it would fetch its scripts from a CDN; the OpenAPI schema itself is served
    app = FastAPI(title="weighter", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.weighter = state
    app.add_middleware(_BodyLimit, limit=state.upload_limit + _MULTIPART_SLACK)
    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, read_only=read_only)  # outermost: first to see
    state.read_only = read_only

    @app.exception_handler(WeighterError)
    def weighter_error(request, error: WeighterError):
        return JSONResponse({"error": str(error)}, status_code=getattr(error, "status", 400))

    @app.get("/", include_in_schema=False)
    def index_page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info():
        store = state.store
        return store.info().to_dict() | {"latest_run": store.run_id(), "read_only": state.read_only}

    @app.get("/api/files")
    def files(q: str = "", limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0)):
        return _find_files(state.store, q, limit, offset)

    @app.get("/api/files/{file_id}")
    def file_page(file_id: int, k: int = Query(10, ge=1, le=100)):
        store = state.store
        query = _stored_set(store, file_id)
        run = store.run_id()
        return {"file": _file_row(store, file_id), "set": query.to_json(),
                "run": run, "slot_groups": _slot_groups(store, run, file_id) if run else [],
                "nearest": _query_json(store, query, query_store(store, query, k=k), file_id)}

    @app.get("/api/query")
    def query_stored(file_id: int, k: int = Query(10, ge=1, le=100), slot: int | None = None):
        store = state.store
        query = _stored_set(store, file_id)
        try:
            matches = query_store(store, query, k=k, slot=slot)
        except ValueError as error:
            raise Refused(422, str(error)) from None
        return _query_json(store, query, matches, file_id)

    @app.post("/api/query")
    def query_upload(file: UploadFile = File(...), k: int = Form(10, ge=1, le=100)):
        query = _embed_upload(state, file)
        return _query_json(state.store, query, query_store(state.store, query, k=k), None)

    @app.get("/api/groups")
    def groups(run: int | None = None, members: bool = True):
        store = state.store
        run_id = _run_id(store, run)
        return _run_members(state, run_id) if members else _run_summary(state, run_id)

    @app.get("/api/groups/map.png")
    def group_map(run: int | None = None):
        return Response(_map_png(state, _run_id(state.store, run)), media_type="image/png",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/groups/{group_id}")
    def group(group_id: int, run: int | None = None):
        store = state.store
        run_id = _run_id(store, run)
        summary = _run_summary(state, run_id)
        found = next((g for g in summary["groups"] if g["id"] == group_id), None)
        if found is None:
            raise Refused(404, f"run {run_id}: no group {group_id}")
        return {"run": summary["run"], "group": {key: value for key, value in found.items() if key != "members"}
                | {"members": _members_with_spans(store, run_id, group_id)}}

    @app.post("/api/groups/{group_id}/name")
    def name_a_group(group_id: int, name: str = Form(...), run: int | None = Form(None)):
        from weighter.index.speakers import name_group

        with Store(state.store.directory) as writable:  # the app's own store is read-only
            speaker = name_group(writable, group_id, name.strip(), run)
        return speaker.to_dict()

    @app.get("/api/speakers")
    def speakers():
        from weighter.index.speakers import speakers_json

        return speakers_json(state.store)

    @app.get("/api/speakers/{name:path}")
    def speaker(name: str, k: int = Query(20, ge=1, le=1000), min_p: float | None = Query(None, ge=0, le=1)):
        from weighter.index.speakers import get_speaker, query_speaker, run_names, speaker_set

        store = state.store
        try:
            found = get_speaker(store, name)
        except WeighterError as error:
            raise Refused(404, str(error)) from None
        run = store.run_id()
        place = next((n.to_dict() for n in run_names(store, run) if n.name == name), None) if run else None
        query = speaker_set(store, name)
        return {"speaker": found.to_dict(), "run": run, "in_run": place} | _query_json(
            store, query, query_speaker(store, name, k=k, min_probability=min_p), None)

    @app.get("/api/audio/{file_id}")
    def audio(file_id: int):
        path, media_type = stored_audio(state.store, file_id, state.root)
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return app


def _run_id(store: Store, run: int | None) -> int:
    from weighter.cluster import latest_run

    try:
        return latest_run(store, run)
    except WeighterError as error:
        raise Refused(404, str(error)) from None


def _find_files(store: Store, text: str, limit: int, offset: int) -> dict:
    """Stored files whose path holds ``text`` (any case), by path: ``{"files": [...], "total"}``."""
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"
    where = "WHERE f.path LIKE ? ESCAPE '\\'"
    total = store.db.execute(f"SELECT COUNT(*) FROM files f {where}", (pattern,)).fetchone()[0]
    rows = store.db.execute(
        f"SELECT f.id, f.path, f.duration, (SELECT COUNT(*) FROM slots s WHERE s.file_id = f.id AND +s.active = 1) "
        f"FROM files f {where} ORDER BY f.path LIMIT ? OFFSET ?", (pattern, limit, offset)).fetchall()
    return {"files": [{"id": i, "path": p, "name": Path(p).name, "duration": round(d, 3), "active_slots": a}
                      for i, p, d, a in rows], "total": total}


def _file_row(store: Store, file_id: int) -> dict:
    row = store.db.execute("SELECT path, duration FROM files WHERE id = ?", (file_id,)).fetchone()
    if row is None:
        raise Refused(404, f"file {file_id}: not in the store")
    return {"id": file_id, "path": row[0], "name": Path(row[0]).name, "duration": round(row[1], 3)}


def _stored_set(store: Store, file_id: int):
    _file_row(store, file_id)  # 404 for an unknown id
    return store.embedding_set(file_id)


def _query_json(store: Store, query, matches, query_id: int | None) -> dict:
    """``weighter query --json`` with the stored files' ids and durations (for links and timelines)."""
    result = matches_json(query, matches)
    paths = [m["file"] for m in result["results"]]
    known = {}
    if paths:
        rows = store.db.execute(f"SELECT path, id, duration FROM files WHERE path IN ({','.join('?' * len(paths))})",
                                paths).fetchall()
        known = {p: (i, d) for p, i, d in rows}
    for m in result["results"]:
        m["file_id"], m["duration"] = known.get(m["file"], (None, None))
    result["query"] |= {"file_id": query_id, "stored": query_id is not None}
    return result


def _slot_groups(store: Store, run: int, file_id: int) -> list[dict]:
    """Each placed slot of a file in a run: ``[{"slot", "group", "name", "probability", "how"}]``."""
    from weighter.index.speakers import group_names

    names = group_names(store, run)
    rows = store.db.execute("SELECT s.slot, m.group_id, m.probability, m.how FROM cluster_members m "
                            "JOIN slots s ON s.id = m.slot_id WHERE m.run_id = ? AND s.file_id = ? ORDER BY s.slot",
                            (run, file_id)).fetchall()
    return [{"slot": s, "group": g, "name": names.get(g), "probability": round(p, 4), "how": h} for s, g, p, h in rows]


def _members_count(store: Store, run: int) -> int:
    return store.db.execute("SELECT COUNT(*) FROM cluster_members WHERE run_id = ?", (run,)).fetchone()[0]


def _run_key(state: _State, run: int) -> tuple:
    """What a run's listing depends on: ``weighter cluster --assign`` adds members, a name
    changes a group's."""
    from weighter.index.speakers import state_token

    return run, _members_count(state.store, run), state_token(state.store)


def _run_summary(state: _State, run: int) -> dict:
    """``run_summary``: the run's groups without members, cached until the run changes."""
    from weighter.cluster import run_summary

    key = _run_key(state, run)
    if key not in state.runs:
        state.runs = {key: run_summary(state.store, run)}  # the latest one only
    return state.runs[key]


def _run_members(state: _State, run: int) -> dict:
    """``run_result`` without spans, each member with its file id (every member of the run: made
    for each request that asks for them, never kept)."""
    from weighter.cluster import run_result

    result = run_result(state.store, run, with_spans=False)
    members = [m for g in result["groups"] for m in g["members"]] + result["outliers"]
    ids = dict(state.store.db.execute("SELECT path, id FROM files").fetchall())  # the run names most files anyway
    for m in members:
        m["file_id"] = ids.get(m["file"])
    return result


def _members_with_spans(store: Store, run: int, group: int) -> list[dict]:
    """A group's members as ``run_result`` gives them (spans included), each with its file id."""
    from weighter.embedding_set import spans

    rows = store.db.execute(
        "SELECT m.slot_id, m.probability, m.how, f.path, s.slot, f.id FROM cluster_members m "
        "JOIN slots s ON s.id = m.slot_id JOIN files f ON f.id = s.file_id WHERE m.run_id = ? AND m.group_id = ? "
        "ORDER BY f.path, s.slot", (run, group)).fetchall()
    timelines = store.slot_timelines([r[0] for r in rows])
    members = []
    for slot_id, prob, how, path, slot, file_id in rows:
        _, duration, weighting, rate = timelines[slot_id]
        members.append({"file": path, "slot": slot, "probability": round(prob, 4), "how": how,
                        "spans": spans(weighting, rate, duration), "file_id": file_id, "duration": round(duration, 3)})
    return members


def _map_png(state: _State, run: int) -> bytes:
    """The run's 2-D map (``draw_map``), drawn once per run and member count."""
    from weighter.cluster import draw_map

    key = (run, _members_count(state.store, run))
    with state.draw_lock:
        if key not in state.maps:
            with tempfile.TemporaryDirectory() as tmp:
                draw_map(state.store, run, Path(tmp) / "map.png")
                state.maps = {key: (Path(tmp) / "map.png").read_bytes()}
        return state.maps[key]


def _upload_name(name: str | None) -> str:
    """An upload's file name, kept to letters, digits, '.', '-' and '_' (it names a temporary file)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "upload").name).lstrip(".")[:120]
    return base or "upload"


def _embed_upload(state: _State, upload):
    """An uploaded file's embedding set, as ``weighter embed`` makes it; nothing is stored.

    Raises ``Refused`` 413 over the size limit, 422 for audio ``weighter embed`` refuses (the
    same one-line reason), 409 for a store of another model than the app's."""
    from weighter.embedder import Embedder

    name = _upload_name(upload.filename)
    with tempfile.TemporaryDirectory(prefix="weighter-upload-") as tmp:
        path = Path(tmp) / name
        size = 0
        with open(path, "wb") as out:
            while block := upload.file.read(1 << 20):
                size += len(block)
                if size > state.upload_limit:
                    raise Refused(413, f"{name}: larger than the upload limit of {state.upload_limit / 2**20:g} MiB")
                out.write(block)
        with state.embed_lock:
            if state.embedder is None:
                state.embedder = Embedder.load(state.model, speech_gate=state.store.speech_gate)
            try:
                state.store.check_model(state.embedder.model_id)
            except WeighterError as error:
                raise Refused(409, f"{error}; start `weighter serve` with --model set to the store's model") from None
            try:
                query = state.embedder.embed([path])[0]
            except AudioError as error:
                reason = error.reason.replace(str(path), name)  # the server's temporary path is no one's business
                raise Refused(422, f"{name}: {reason}; nothing was stored") from None
    query.path = name
    return query


class _BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, by its
    Content-Length at once, else as soon as the bytes received pass it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(send, self.limit)
        received, over, answered = 0, False, False

        async def counted():
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                over = True
                raise _TooLarge
            return message

        async def watched(message):
            nonlocal answered
            if over:  # the app's own answer to the cut-off body (FastAPI: 400) gives way to a 413
                if not answered:
                    answered = True
                    await _too_large(send, self.limit)
                return
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            pass
        if over and not answered:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    import json

    body = json.dumps({"error": f"upload larger than the limit of {(limit - _MULTIPART_SLACK) / 2**20:g} MiB"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
