"""The trial store: every trial of a search in one embedded SQLite database.

``<run_dir>/trials.sqlite`` holds one row per trial (its cell as JSON, the cell's canonical hash,
state, metrics, error text, timestamps, worker, seed, attempt count) and a ``meta`` table of
JSON values (search config, master seed, budget). The search process is the only writer of
trial states; workers return their results to it and never open the database. Any process may
read it while a search runs (``TrialStore.open(run_dir).trials()``), and a maintenance command
may correct a finished trial's metrics beside it (``amend_metrics``; SQLite serialises the
writes, and the search never rewrites a finished trial).

Design choices where the spec is silent:

- WAL journal with ``synchronous=FULL``: a reader never blocks the writer, and every committed
  transaction survives a SIGKILL or a power cut. Each public write is one transaction
  (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a search killed at any moment leaves each trial in
  exactly one of its states; SQLite rolls back a transaction that did not commit.
- States move ``pending -> running -> completed | failed``, ``running -> pending`` (re-queued)
  and ``pending -> failed`` (abandoned). Any other move (e.g. completing a trial twice) is an
  error naming the trial and its state, so a trial cannot be counted twice. A completed trial's
  metrics may be corrected in place (``amend_metrics``, e.g. a cost recounted after a fix of
  the counter); its state and times stay.
- ``attempts`` counts starts (``mark_running``), including a start cut short by a restart of
  the search.
- A trial's seed defaults to ``trial_seed(master_seed, trial_id)`` (SHA-256 of both, 31 bits)
  with the ``master_seed`` recorded in ``meta``: seeds depend on nothing but those two numbers.
- Timestamps are Unix seconds (``time.time()``), so they compare across processes.
- Cells enter as ``CellSpec`` (anything with ``to_dict()`` and ``hash()``) and come back as
  their plain dict (``TrialRecord.cell``; ``TrialRecord.spec()`` parses it), so reading a store
  needs no search space.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

STORE_FILENAME = "trials.sqlite"
SCHEMA_VERSION = 1
TRIAL_STATES = ("pending", "running", "completed", "failed")
FINISHED_STATES = ("completed", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_hash   TEXT    NOT NULL,
    cell        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed')),
    seed        INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    metrics     TEXT,
    error       TEXT,
    created_at  REAL    NOT NULL,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS trials_state ON trials (state);
CREATE INDEX IF NOT EXISTS trials_cell_hash ON trials (cell_hash);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS = (
    "id, cell_hash, cell, state, seed, attempts, worker, metrics, error, "
    "created_at, started_at, finished_at"
)


class CellLike(Protocol):
    """What the store needs of a cell: ``attnas.space.CellSpec`` satisfies it."""

    def to_dict(self) -> dict[str, Any]: ...

    def hash(self) -> str: ...


def trial_seed(master_seed: int, trial_id: int) -> int:
    """The seed of trial ``trial_id`` of a search with ``master_seed``, in ``[0, 2**31)``.

    Args:
        master_seed: the search's master seed.
        trial_id: the trial's id in the store.

    Returns:
        A seed fixed by the two numbers (SHA-256, not Python's salted ``hash``).
    """
    text = f"attnas.trial:{int(master_seed)}:{int(trial_id)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") % (1 << 31)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored.

    The controller's ``Searcher.restore`` reads these records directly (``cell``, ``state``,
    ``metrics``, ``error``).

    Attributes:
        trial_id: the trial's id (1, 2, ... in the order trials were added).
        cell: the cell's dict form (``CellSpec.to_dict()``).
        cell_hash: ``CellSpec.hash()`` of the cell.
        state: ``pending``, ``running``, ``completed`` or ``failed``.
        seed: the trial's seed.
        attempts: how many times the trial was started.
        worker: the worker that ran (or runs) it, when known.
        metrics: what the trial returned (empty until it finishes; a failed trial may keep the
            partial metrics its trial function returned).
        error: the error text of a failed trial (or the reason of the last re-queue).
        created_at: when it was added (Unix seconds).
        started_at: when its last attempt started.
        finished_at: when it completed or failed.
    """

    trial_id: int
    cell: dict[str, Any]
    cell_hash: str
    state: str
    seed: int
    attempts: int = 0
    worker: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def id(self) -> int:
        """Alias of ``trial_id``."""
        return self.trial_id

    @property
    def finished(self) -> bool:
        """Whether the trial completed or failed."""
        return self.state in FINISHED_STATES

    def objective(self, metric: str = "top1") -> float | None:
        """``metrics[metric]`` of a completed trial as a float (None otherwise)."""
        if self.state != "completed":
            return None
        raw = self.metrics.get(metric)
        return None if raw is None else float(raw)

    def spec(self) -> Any:
        """The cell as an ``attnas.space.CellSpec``."""
        from attnas.space import CellSpec

        return CellSpec.from_dict(self.cell, source=f"trial {self.trial_id}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return {
            "trial_id": self.trial_id,
            "cell": self.cell,
            "cell_hash": self.cell_hash,
            "state": self.state,
            "seed": self.seed,
            "attempts": self.attempts,
            "worker": self.worker,
            "metrics": self.metrics,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class TrialStore:
    """The SQLite trial store of one run directory (see the module docstring).

    Open it with ``TrialStore.open(run_dir)``; it is also a context manager that closes the
    connection.

    Args:
        path: the database file.
        connection: an open connection to it (autocommit mode; transactions are explicit).
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._conn = connection

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, run_dir: str | Path, create: bool = True, timeout_s: float = 30.0) -> TrialStore:
        """Open (or create) ``<run_dir>/trials.sqlite``.

        Args:
            run_dir: the search's run directory.
            create: create the directory and an empty store when missing; with False a missing
                store raises ``FileNotFoundError``.
            timeout_s: how long a statement waits for a lock held by another connection.

        Returns:
            The store.
        """
        run_dir = Path(run_dir)
        path = run_dir / STORE_FILENAME
        if not path.is_file():
            if not create:
                raise FileNotFoundError(f"no trial store at {path}")
            run_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise RuntimeError(f"could not put trial store {path} in WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        store = cls(path, conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # a new store (readers of an existing one never take the write lock)
            with store._transaction() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(
                f"trial store {path} has schema version {version}; this attnas reads "
                f"version {SCHEMA_VERSION}"
            )
        return store

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def run_dir(self) -> Path:
        """The run directory holding the store."""
        return self.path.parent

    def trial_dir(self, trial_id: int) -> Path:
        """``<run_dir>/trials/<trial_id>``: where a trial writes its checkpoint and logs."""
        return self.run_dir / "trials" / str(int(trial_id))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: committed on success, rolled back on any exception."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key`` (``default`` when absent)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def meta(self) -> dict[str, Any]:
        """Every meta entry."""
        rows = self._conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``, replacing any previous value."""
        text = json.dumps(value, sort_keys=True)
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, text),
            )

    def ensure_meta(self, values: Mapping[str, Any]) -> None:
        """Record ``values`` in ``meta``, or check them against what a previous run recorded.

        Raises:
            ValueError: when a key already holds a different value (names the key and both
                values), e.g. a resumed search started with another budget or master seed.
        """
        texts = {k: json.dumps(v, sort_keys=True) for k, v in values.items()}
        with self._transaction() as cur:
            for key, text in texts.items():
                row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                if row is None:
                    cur.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, text))
                elif json.loads(row[0]) != json.loads(text):
                    raise ValueError(
                        f"trial store {self.path}: meta {key!r} is {row[0]} from the earlier run, "
                        f"but this run asks for {text}; resume with the same value or use a new "
                        "run directory"
                    )

    # ------------------------------------------------------------------ writes
    def add(self, cell: CellLike, seed: int | None = None) -> int:
        """Add a pending trial of ``cell``.

        Args:
            cell: the cell (a ``CellSpec``).
            seed: the trial's seed; None derives it with ``trial_seed(meta master_seed,
                trial_id)`` (master seed 0 when the meta table has none).

        Returns:
            The new trial's id.
        """
        cell_text = json.dumps(cell.to_dict(), sort_keys=True)
        cell_hash = str(cell.hash())
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO trials (cell_hash, cell, state, seed, created_at) "
                "VALUES (?, ?, 'pending', ?, ?)",
                (cell_hash, cell_text, 0 if seed is None else int(seed), time.time()),
            )
            trial_id = int(cur.lastrowid)
            if seed is None:
                row = cur.execute("SELECT value FROM meta WHERE key = 'master_seed'").fetchone()
                master = 0 if row is None else int(json.loads(row[0]))
                seed = trial_seed(master, trial_id)
                cur.execute("UPDATE trials SET seed = ? WHERE id = ?", (seed, trial_id))
        return trial_id

    def _transition(
        self,
        trial_id: int,
        allowed_from: tuple[str, ...],
        action: str,
        assignments: str,
        params: tuple[Any, ...],
    ) -> None:
        placeholders = ", ".join("?" for _ in allowed_from)
        with self._transaction() as cur:
            cur.execute(
                f"UPDATE trials SET {assignments} WHERE id = ? AND state IN ({placeholders})",
                (*params, int(trial_id), *allowed_from),
            )
            if cur.rowcount == 1:
                return
            row = cur.execute("SELECT state FROM trials WHERE id = ?", (int(trial_id),)).fetchone()
        if row is None:
            raise KeyError(f"trial {trial_id} is not in the trial store {self.path}")
        raise ValueError(
            f"cannot {action} trial {trial_id}: it is {row[0]} (allowed from "
            f"{' or '.join(allowed_from)})"
        )

    def mark_running(self, trial_id: int, worker: str | None = None) -> None:
        """A pending trial starts: state ``running``, ``attempts + 1``, ``started_at`` now."""
        self._transition(
            trial_id,
            ("pending",),
            "start",
            "state = 'running', attempts = attempts + 1, worker = ?, started_at = ?",
            (worker, time.time()),
        )

    def complete(
        self, trial_id: int, metrics: Mapping[str, Any], worker: str | None = None
    ) -> None:
        """A running trial completed with ``metrics`` (a JSON-serialisable mapping)."""
        self._transition(
            trial_id,
            ("running",),
            "complete",
            "state = 'completed', metrics = ?, error = NULL, finished_at = ?, "
            "worker = COALESCE(?, worker)",
            (_metrics_json(metrics), time.time(), worker),
        )

    def amend_metrics(self, trial_id: int, metrics: Mapping[str, Any]) -> None:
        """Replace a completed trial's metrics (its state, times and worker stay)."""
        self._transition(
            trial_id,
            ("completed",),
            "amend the metrics of",
            "metrics = ?",
            (_metrics_json(metrics),),
        )

    def fail(
        self,
        trial_id: int,
        error: str,
        metrics: Mapping[str, Any] | None = None,
        worker: str | None = None,
    ) -> None:
        """A running (or never started) trial failed with ``error`` (and optional metrics)."""
        self._transition(
            trial_id,
            ("running", "pending"),
            "fail",
            "state = 'failed', error = ?, metrics = ?, finished_at = ?, "
            "worker = COALESCE(?, worker)",
            (str(error), _metrics_json(metrics or {}), time.time(), worker),
        )

    def requeue(self, trial_id: int, reason: str | None = None) -> None:
        """A running trial goes back to ``pending`` (to run again, same cell and seed)."""
        self._transition(
            trial_id,
            ("running",),
            "re-queue",
            "state = 'pending', error = COALESCE(?, error)",
            (reason,),
        )

    def requeue_running(self, reason: str = "re-queued at resume") -> list[int]:
        """Put every running trial back to ``pending`` (used when a search resumes).

        Returns:
            The ids re-queued, in id order.
        """
        with self._transaction() as cur:
            ids = [
                int(r[0])
                for r in cur.execute(
                    "SELECT id FROM trials WHERE state = 'running' ORDER BY id"
                ).fetchall()
            ]
            cur.execute(
                "UPDATE trials SET state = 'pending', error = ? WHERE state = 'running'", (reason,)
            )
        return ids

    # ------------------------------------------------------------------ reads
    def get(self, trial_id: int) -> TrialRecord:
        """The record of ``trial_id``; ``KeyError`` naming the id when absent."""
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM trials WHERE id = ?", (int(trial_id),)
        ).fetchone()
        if row is None:
            raise KeyError(f"trial {trial_id} is not in the trial store {self.path}")
        return _record(row)

    def trials(self, state: str | None = None) -> list[TrialRecord]:
        """Every trial (or those in ``state``), in id order."""
        if state is None:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM trials ORDER BY id").fetchall()
        else:
            _check_state(state)
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM trials WHERE state = ? ORDER BY id", (state,)
            ).fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of trials in each state (every state present, zeros included)."""
        out = dict.fromkeys(TRIAL_STATES, 0)
        for state, n in self._conn.execute(
            "SELECT state, COUNT(*) FROM trials GROUP BY state"
        ).fetchall():
            out[str(state)] = int(n)
        return out

    def hashes(self) -> set[str]:
        """The cell hashes of every trial in the store."""
        return {r[0] for r in self._conn.execute("SELECT cell_hash FROM trials").fetchall()}

    def best(self, metric: str = "top1") -> TrialRecord | None:
        """The completed trial with the largest ``metrics[metric]`` (the earliest on ties)."""
        best: TrialRecord | None = None
        for record in self.trials("completed"):
            value = record.objective(metric)
            if value is None or math.isnan(value):
                continue
            best_value = None if best is None else best.objective(metric)
            if best_value is None or value > best_value:
                best = record
        return best

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])


def _check_state(state: str) -> None:
    if state not in TRIAL_STATES:
        raise ValueError(f"trial state {state!r} is not one of {list(TRIAL_STATES)}")


def _metrics_json(metrics: Mapping[str, Any]) -> str:
    if not isinstance(metrics, Mapping):
        raise TypeError(f"trial metrics must be a mapping, got {type(metrics).__name__}")
    try:
        return json.dumps(dict(metrics), sort_keys=True)
    except TypeError as err:
        raise TypeError(f"trial metrics are not JSON-serialisable: {err}") from err


def _record(row: tuple[Any, ...]) -> TrialRecord:
    (tid, cell_hash, cell, state, seed, attempts, worker, metrics, error, c_at, s_at, f_at) = row
    return TrialRecord(
        trial_id=int(tid),
        cell=json.loads(cell),
        cell_hash=str(cell_hash),
        state=str(state),
        seed=int(seed),
        attempts=int(attempts),
        worker=worker,
        metrics=json.loads(metrics) if metrics else {},
        error=error,
        created_at=float(c_at),
        started_at=None if s_at is None else float(s_at),
        finished_at=None if f_at is None else float(f_at),
    )
