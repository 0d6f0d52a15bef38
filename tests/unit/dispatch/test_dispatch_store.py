"""TrialStore: round trip, state transitions, WAL mode, meta, seeds, consistency after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from attnas.dispatch import TrialStore, trial_seed
from attnas.space import load_space


@pytest.fixture(scope="module")
def cells():
    space = load_space("attention_nas")
    out, seen = [], set()
    i = 0
    while len(out) < 6:
        cell = space.sample(i)
        i += 1
        if cell.hash() not in seen:
            seen.add(cell.hash())
            out.append(cell)
    return out


def test_round_trip_and_public_contract(tmp_path: Path, cells) -> None:
    store = TrialStore.open(tmp_path)
    store.set_meta("master_seed", 7)
    t1 = store.add(cells[0])
    t2 = store.add(cells[1], seed=123)
    assert (t1, t2) == (1, 2)
    store.mark_running(t1, worker="local:0:cpu")
    metrics = {"top1": 0.625, "history": [{"epoch": 0, "val_top1": 0.5}], "nan": float("nan")}
    store.complete(t1, metrics)
    store.close()

    # DESIGN.md's contract: TrialStore.open(run_dir).trials() -> cell_hash, state, metrics.
    records = TrialStore.open(tmp_path, create=False).trials()
    assert [r.trial_id for r in records] == [1, 2]
    first, second = records
    assert first.cell_hash == cells[0].hash()
    assert first.state == "completed"
    assert first.metrics["top1"] == 0.625
    assert first.metrics["history"] == [{"epoch": 0, "val_top1": 0.5}]
    assert first.metrics["nan"] != first.metrics["nan"]  # NaN survives the JSON round trip
    assert first.spec() == cells[0]
    assert first.cell == json.loads(json.dumps(cells[0].to_dict()))
    assert first.worker == "local:0:cpu" and first.attempts == 1
    assert first.created_at <= first.started_at <= first.finished_at
    # seeds: derived from (master seed, trial id) unless given
    assert first.seed == trial_seed(7, 1)
    assert second.seed == 123 and second.state == "pending" and second.metrics == {}


def test_trial_seed_formula() -> None:
    digest = hashlib.sha256(b"attnas.trial:3:17").digest()
    assert trial_seed(3, 17) == int.from_bytes(digest[:8], "little") % 2**31
    assert trial_seed(3, 17) != trial_seed(3, 18) != trial_seed(4, 17)


def test_state_transitions_and_errors(tmp_path: Path, cells) -> None:
    store = TrialStore.open(tmp_path)
    ids = [store.add(c) for c in cells[:4]]
    store.mark_running(ids[0])
    store.requeue(ids[0], "worker died")
    rec = store.get(ids[0])
    assert (rec.state, rec.attempts, rec.error) == ("pending", 1, "worker died")
    store.mark_running(ids[0])
    store.complete(ids[0], {"top1": 0.5})
    assert store.get(ids[0]).error is None and store.get(ids[0]).attempts == 2

    with pytest.raises(ValueError, match="cannot complete trial 1: it is completed"):
        store.complete(ids[0], {"top1": 0.9})
    with pytest.raises(ValueError, match="cannot start trial 1: it is completed"):
        store.mark_running(ids[0])
    with pytest.raises(ValueError, match="cannot complete trial 2: it is pending"):
        store.complete(ids[1], {"top1": 0.1})
    with pytest.raises(KeyError, match="trial 99 is not in the trial store"):
        store.get(99)
    with pytest.raises(KeyError, match="trial 99"):
        store.fail(99, "x")

    store.mark_running(ids[1])
    store.fail(ids[1], "Traceback ... RuntimeError: boom", {"top1": None})
    store.fail(ids[2], "abandoned")  # pending -> failed is allowed
    store.mark_running(ids[3])
    assert store.counts() == {"pending": 0, "running": 1, "completed": 1, "failed": 2}
    assert [r.trial_id for r in store.trials("failed")] == [2, 3]
    with pytest.raises(ValueError, match="trial state 'done'"):
        store.trials("done")

    before = store.get(ids[0])
    store.amend_metrics(ids[0], {"top1": 0.5, "flops": 12})
    after = store.get(ids[0])
    assert after.metrics == {"top1": 0.5, "flops": 12}
    assert (after.state, after.attempts, after.finished_at) == ("completed", 2, before.finished_at)
    with pytest.raises(ValueError, match="cannot amend the metrics of trial 4: it is running"):
        store.amend_metrics(ids[3], {"top1": 0.1})

    assert store.requeue_running() == [4]
    assert store.get(4).state == "pending" and store.get(4).error == "re-queued at resume"
    assert store.best().trial_id == 1
    assert len(store) == 4 and store.hashes() == {c.hash() for c in cells[:4]}


def test_wal_mode_and_concurrent_reader(tmp_path: Path, cells) -> None:
    store = TrialStore.open(tmp_path)
    store.add(cells[0])
    conn = sqlite3.connect(tmp_path / "trials.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # A reader holding a read transaction does not block the writer (WAL), and sees a snapshot.
    conn.execute("BEGIN")
    assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 1
    store.add(cells[1])
    assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 1
    conn.execute("COMMIT")
    assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 2
    conn.close()


def test_meta_and_ensure_meta(tmp_path: Path) -> None:
    store = TrialStore.open(tmp_path)
    store.ensure_meta({"budget": 8, "master_seed": 0, "config": {"a": [1, 2]}})
    store.ensure_meta({"budget": 8, "config": {"a": [1, 2]}})  # same values: fine
    assert store.meta() == {"budget": 8, "config": {"a": [1, 2]}, "master_seed": 0}
    with pytest.raises(ValueError, match=r"meta 'budget' is 8 from the earlier run.*asks for 9"):
        store.ensure_meta({"budget": 9})
    store.set_meta("budget", 9)
    assert store.get_meta("budget") == 9 and store.get_meta("missing", "d") == "d"


def test_open_missing_store_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no trial store at .*trials.sqlite"):
        TrialStore.open(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


_WRITER = textwrap.dedent(
    """
    import sys, time
    from attnas.dispatch import TrialStore
    from attnas.space import load_space

    space = load_space("attention_nas")
    store = TrialStore.open(sys.argv[1])
    # an open write transaction that never commits: SIGKILL must roll it back
    cur = store._conn.cursor()
    i = 0
    while True:
        tid = store.add(space.sample(i))
        store.mark_running(tid)
        store.complete(tid, {"top1": i / 1000})
        i += 1
        if i == 20:
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(
                "INSERT INTO trials (cell_hash, cell, state, seed, created_at) "
                "VALUES ('uncommitted', '{}', 'pending', 0, 0)"
            )
            cur.execute("UPDATE trials SET state = 'failed' WHERE id = 1")
            print("in-transaction", flush=True)
            time.sleep(60)
    """
)


def test_consistent_after_sigkill_mid_transaction(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "in-transaction"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    store = TrialStore.open(tmp_path)
    assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    records = store.trials()
    # the 20 committed trials are all there and completed; the uncommitted writes are gone
    assert len(records) == 20
    assert all(r.state == "completed" for r in records)
    assert [r.metrics["top1"] for r in records] == [i / 1000 for i in range(20)]
    assert "uncommitted" not in store.hashes()
    # and the store keeps working
    t = time.time()
    store.mark_running(store.add(load_space("attention_nas").sample(999)))
    assert store.get(21).started_at >= t


def test_schema_version_mismatch_is_refused(tmp_path: Path) -> None:
    TrialStore.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "trials.sqlite")
    conn.execute("PRAGMA user_version = 42")
    conn.close()
    with pytest.raises(RuntimeError, match="has schema version 42; this attnas reads version 1"):
        TrialStore.open(tmp_path)
