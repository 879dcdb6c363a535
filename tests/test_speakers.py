"""Named speakers (weighter.index.speakers): enrolment, named groups that carry over runs,
search by name, exports, bad input, and stores made before speakers existed."""

import json
import shutil
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from weighter.cli import main


@pytest.fixture
def store_copy(corpus_store, tmp_path):
    """A copy of the clustered test store (run 1, embedding clusterer), the model, the 2 files
    kept out of it."""
    store_dir, audio, model, extra = corpus_store
    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    return copy, model, extra


def _run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _tables(store_dir) -> tuple:
    """The speaker tables and the files, as rows: what a refused command must leave alone."""
    with sqlite3.connect(store_dir / "store.sqlite") as db:
        return tuple(tuple(db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
                     for t in ("speakers", "speaker_refs", "files"))


def _largest_group(store_dir):
    from weighter.cluster import latest_run, run_result
    from weighter.index import Store

    with Store(store_dir) as store:
        result = run_result(store, latest_run(store))
    return result["groups"][0]


def test_a_named_group_is_found_by_name_and_carries_its_name_into_a_new_run(store_copy):
    from weighter.cluster import SlotClusterer, cluster_store, run_result
    from weighter.index import Store
    from weighter.index.speakers import group_names, query_speaker, run_names

    store_dir, _, _ = store_copy
    group = _largest_group(store_dir)
    named = json.loads(_run("speaker", "name", group["id"], "branch manager", "--store", store_dir, "--json").output)
    assert named["name"] == "branch manager" and named["references"] == group["size"]
    # searching by name finds the group's files first: its references are those very slots
    found = json.loads(_run("query", "--speaker", "branch manager", "--store", store_dir, "-k", "10", "--json").output)
    members = {m["file"] for m in group["members"]}
    top = [m["file"] for m in found["results"][:len(members)]]
    assert set(top) == members
    assert all(m["probability"] is not None and m["stored_spans"] is not None for m in found["results"])
    assert {m["speaker"] for m in found["results"] if m["file"] in members} == {"branch manager"}
    # a new run with the same clusterer: the group holding the slots carries the name
    with Store(store_dir) as store:
        run2 = cluster_store(store, SlotClusterer(min_cluster_size=2))
        result = run_result(store, run2)
        carried = [g for g in result["groups"] if g["name"] == "branch manager"]
        assert len(carried) == 1 and {m["file"] for m in carried[0]["members"]} >= members
        assert group_names(store, run2) == {carried[0]["id"]: "branch manager"}
        assert [n.status for n in run_names(store, run2)] == ["named"]
        assert len(query_speaker(store, "branch manager", k=3)) == 3
    text = _run("cluster", "--store", store_dir, "--run", run2).output
    assert "[branch manager]" in text


def test_names_that_split_vanish_or_collide_are_reported_never_moved(store_copy):
    from weighter.cluster.runs import _save_run
    from weighter.index import Store
    from weighter.index.speakers import group_names, name_group, run_names

    store_dir, _, _ = store_copy
    with Store(store_dir) as store:
        ids, _ = store.active_vectors()
        assert len(ids) >= 6
        # hand-made runs: run A puts slots 0-3 in group 0 and the rest in group 1
        labels = np.where(np.arange(len(ids)) < 4, 0, 1)
        with store.writing():
            run_a = _save_run(store, ids, labels, np.ones(len(ids)), np.full(len(ids), "fitted", object), {}, {})
        name_group(store, 0, "Alice", run_a)
        assert group_names(store, run_a) == {0: "Alice"}
        # run B splits Alice's four slots 2 / 2 over groups 5 and 6: no group carries the name
        split = np.where(np.arange(len(ids)) < 2, 5, np.where(np.arange(len(ids)) < 4, 6, 7))
        with store.writing():
            run_b = _save_run(store, ids, split, np.ones(len(ids)), np.full(len(ids), "fitted", object), {}, {})
        [entry] = run_names(store, run_b)
        assert (entry.status, entry.anchors, entry.groups) == ("split", 4, {5: 2, 6: 2})
        assert group_names(store, run_b) == {}
        # run C makes Alice's slots outliers: gone
        gone = np.where(np.arange(len(ids)) < 4, -1, 1)
        with store.writing():
            run_c = _save_run(store, ids, gone, np.ones(len(ids)), np.full(len(ids), "fitted", object), {}, {})
        assert run_names(store, run_c)[0].status == "gone"
        # Bob named on group 1 of run A (the other slots); run D puts everyone in one group:
        # the name with more slots there keeps it, the other is contested
        name_group(store, 1, "Bob", run_a)
        with store.writing():
            run_d = _save_run(store, ids, np.zeros(len(ids), int), np.ones(len(ids)),
                              np.full(len(ids), "fitted", object), {}, {})
        status = {n.name: n.status for n in run_names(store, run_d)}
        bigger = "Bob" if len(ids) - 4 > 4 else "Alice"
        assert status[bigger] == "named" and status[{"Alice": "Bob", "Bob": "Alice"}[bigger]] == "contested"
        assert group_names(store, run_d) == {0: bigger}


def test_enrol_from_clips_refine_rename_remove_and_list(store_copy):
    store_dir, model, extra = store_copy
    clip = f"{extra[0]}@0.5-4.5"
    first = json.loads(_run("speaker", "enrol", "Alice", clip, "--store", store_dir, "--model", model, "--json").output)
    assert first["created"] and first["references"] == 1 and first["origins"] == [f"{extra[0]}@0.5-4.5"]
    again = json.loads(_run("speaker", "enrol", "Alice", extra[1], "--store", store_dir, "--model", model,
                            "--json").output)
    assert not again["created"] and again["references"] == 2 and again["id"] == first["id"]
    listed = json.loads(_run("speaker", "list", "--store", store_dir, "--json").output)
    assert [s["name"] for s in listed["speakers"]] == ["Alice"] and listed["run"] == 1
    found = json.loads(_run("query", "--speaker", "Alice", "--store", store_dir, "-k", "4", "--json").output)
    assert len(found["results"]) == 4 and found["query"]["file"] == "speaker:Alice"
    assert all(0 <= m["probability"] <= 1 for m in found["results"])
    probs = [m["probability"] for m in found["results"]]
    strict = json.loads(_run("query", "--speaker", "Alice", "--store", store_dir, "-k", "4", "--min-p", probs[1],
                             "--json").output)
    assert len(strict["results"]) == sum(p >= probs[1] for p in probs)
    _run("speaker", "rename", "Alice", "Alice B.", "--store", store_dir)
    assert "Alice B.: 2 reference(s)" in _run("speaker", "list", "--store", store_dir).output
    removed = json.loads(_run("speaker", "remove", "Alice B.", "--store", store_dir, "--json").output)
    assert removed["references"] == 2
    assert json.loads(_run("speaker", "list", "--store", store_dir, "--json").output)["speakers"] == []
    with sqlite3.connect(store_dir / "store.sqlite") as db:  # the references went with it
        assert db.execute("SELECT COUNT(*) FROM speaker_refs").fetchone()[0] == 0


def test_bad_input_is_one_line_nonzero_and_leaves_the_store_unchanged(store_copy, tmp_path):
    import soundfile as sf

    from weighter.index import Store

    store_dir, model, extra = store_copy
    group = _largest_group(store_dir)
    _run("speaker", "name", group["id"], "Alice", "--store", store_dir)
    silent, empty = tmp_path / "silent.wav", tmp_path / "empty.wav"
    sf.write(str(silent), np.zeros(16000 * 3, np.float32), 16000)
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    before = _tables(store_dir)
    cases = [
        (["query", "--speaker", "Nobody"], "no speaker of that name"),
        (["speaker", "rename", "Nobody", "X"], "no speaker of that name"),
        (["speaker", "remove", "Nobody"], "no speaker of that name"),
        (["speaker", "name", group["id"], "Alice"], "is already named"),
        (["speaker", "name", 999, "Carol"], "has no group 999"),
        (["speaker", "name", group["id"], "Carol", "--run", 77], "no clustering run 77"),
        (["speaker", "enrol", "Carol", str(silent), "--model", model], "all silent"),
        (["speaker", "enrol", "Carol", str(empty), "--model", model], "empty.wav"),
        (["speaker", "enrol", "Carol", str(tmp_path / "missing.flac"), "--model", model], "missing.flac"),
        (["speaker", "enrol", "Carol", f"{extra[0]}@2-900", "--model", model], "outside the file"),
        (["speaker", "enrol", "Carol", f"{extra[0]}@4-2", "--model", model], "before it starts"),
        (["speaker", "enrol", "Carol", f"{extra[0]}@abc", "--model", model], "START-END"),
        (["speaker", "enrol", " ", str(extra[0]), "--model", model], "speaker name"),
        (["speaker", "enrol", "group_3", str(extra[0]), "--model", model], "label unnamed voices"),
    ]
    for args, reason in cases:
        result = _run(*args, "--store", store_dir, ok=False)
        assert result.exit_code != 0, args
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) <= 2 and reason in lines[0], (args, result.output)  # the reason, then a hint at most
        assert _tables(store_dir) == before, args
    _run("speaker", "enrol", "Carol", extra[0], "--store", store_dir, "--model", model)
    after = _tables(store_dir)
    assert _run("speaker", "rename", "Carol", "Alice", "--store", store_dir, ok=False).exit_code != 0
    assert _tables(store_dir) == after
    with Store(store_dir) as store, store.writing():  # a second writer is refused
        result = _run("speaker", "remove", "Carol", "--store", store_dir, ok=False)
        assert result.exit_code != 0 and "being written" in result.output
    assert _tables(store_dir) == after


def test_a_store_made_before_speakers_gains_the_tables_and_loses_nothing(store_copy):
    from weighter.index import Store
    from weighter.index.speakers import list_speakers

    store_dir, _, _ = store_copy
    with sqlite3.connect(store_dir / "store.sqlite") as db:  # the store as the version before speakers made it
        db.executescript("DROP TABLE speaker_refs; DROP TABLE speakers;")
        files = db.execute("SELECT * FROM files ORDER BY id").fetchall()
        slots = db.execute("SELECT COUNT(*), SUM(active) FROM slots").fetchone()
    with Store(store_dir, read_only=True) as store:  # a reader (weighter serve) sees no speakers, and works
        assert list_speakers(store) == []
        assert store.info().files == len(files)
    assert "no named speakers" in _run("speaker", "list", "--store", store_dir).output  # a writer opens it
    with sqlite3.connect(store_dir / "store.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"speakers", "speaker_refs", "files", "slots", "cluster_runs"} <= tables
        assert db.execute("SELECT * FROM files ORDER BY id").fetchall() == files
        assert db.execute("SELECT COUNT(*), SUM(active) FROM slots").fetchone() == slots
    assert _run("index", "info", "--store", store_dir, "--check").exit_code == 0
    group = _largest_group(store_dir)
    _run("speaker", "name", group["id"], "Alice", "--store", store_dir)


def test_export_says_who_speaks_when_in_rttm_that_pyannote_reads(store_copy, tmp_path):
    import csv

    from weighter.evaluation import read_rttm

    store_dir, _, _ = store_copy
    group = _largest_group(store_dir)
    _run("speaker", "name", group["id"], "branch manager", "--store", store_dir)
    rttm, table = tmp_path / "who.rttm", tmp_path / "who.csv"
    _run("export", "--store", store_dir, "--rttm", rttm, "--csv", table)
    rows = list(csv.DictReader(open(table)))
    assert rows and set(rows[0]) == {"file", "speaker", "start", "end", "p"}
    named = [r for r in rows if r["speaker"] == "branch manager"]
    assert {r["file"] for r in named} >= {m["file"] for m in group["members"]}
    assert all(0 <= float(r["p"]) <= 1 for r in named)
    assert all(float(r["start"]) < float(r["end"]) for r in rows)
    ours = read_rttm(rttm)
    assert sum(len(v) for v in ours.values()) == len(rows)
    assert "branch_manager" in {s for v in ours.values() for *_, s in v}
    load_rttm = pytest.importorskip("pyannote.database.util").load_rttm
    theirs = load_rttm(str(rttm))
    assert set(theirs) == set(ours)
    for uri, annotation in theirs.items():
        assert sorted(annotation.labels()) == sorted({s for *_, s in ours[uri]})
        assert abs(sum(seg.duration for seg, _ in annotation.itertracks()) -
                   sum(b - a for a, b, _ in ours[uri])) < 1e-2


def test_export_streams_a_file_at_a_time_from_one_snapshot(store_copy):
    """Chunks that end inside a file give the same turns, each file's together and by start;
    a file removed by another connection while an export runs is still in that export."""
    from itertools import groupby

    from weighter.index import Store
    from weighter.index.build import remove_files
    from weighter.index.speakers import iter_speaker_turns, speaker_turns

    store_dir, _, _ = store_copy
    with Store(store_dir, read_only=True) as store:
        whole = speaker_turns(store)
        assert any(t.speaker.startswith("group_") for t in whole) and len({t.speaker for t in whole}) > 2
        for chunk in (1, 3, 5):  # files hold several active slots: most chunks end inside one
            streamed = list(iter_speaker_turns(store, chunk=chunk))
            assert sorted(streamed, key=lambda t: (t.file, t.start, t.speaker)) == whole
            runs = [(path, [t.start for t in turns]) for path, turns in groupby(streamed, key=lambda t: t.file)]
            assert len(runs) == len({t.file for t in whole})  # each file's turns in one run
            assert all(starts == sorted(starts) for _, starts in runs)
        files = [path for path, _ in runs]
        stream = iter_speaker_turns(store, chunk=3)
        assert next(stream).file == files[0]
        with Store(store_dir) as writer:
            remove_files(writer, [files[-1]])
        rest = list(stream)
        assert rest[-1].file == files[-1]  # read from the snapshot the export began in
        assert files[-1] not in {t.file for t in iter_speaker_turns(store)}


def test_an_open_reader_sees_a_name_given_by_another_connection_at_its_next_query(store_copy):
    """Readers keep what they read from SQLite while the database is unchanged (one look per
    query); a writer's commit from another connection shows at the reader's next query, and
    not inside a snapshot it already holds."""
    from weighter.index import Store, query_store
    from weighter.index.speakers import name_group, rename

    store_dir, _, _ = store_copy
    group = _largest_group(store_dir)
    member = group["members"][0]["file"]
    reader = Store(store_dir, read_only=True)
    query = reader.embedding_set(reader.file_id(member))
    before = query_store(reader, query, k=5)
    assert before and all(m.speaker is None for m in before)
    with Store(store_dir) as writer:  # it takes the write lock itself
        name_group(writer, group["id"], "branch manager")
    named = [m for m in query_store(reader, query, k=5) if m.group == group["id"]]
    assert named and {m.speaker for m in named} == {"branch manager"}
    with reader.snapshot():
        with Store(store_dir) as writer:
            rename(writer, "branch manager", "the manager")
        assert {m.speaker for m in query_store(reader, query, k=5) if m.group == group["id"]} == {"branch manager"}
    assert {m.speaker for m in query_store(reader, query, k=5) if m.group == group["id"]} == {"the manager"}
    reader.close()
