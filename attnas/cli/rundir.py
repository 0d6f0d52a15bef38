"""The run directory of a command: create it, fingerprint it, refuse or resume it.

Every ``attnas-search`` and ``attnas-train`` run goes through ``RunDir.open`` before it writes
anything. The run directory then holds ``run.json``: the fingerprint of everything that defines
the run (the resolved config with the space file's content, searcher, data, trainer, backbone,
seed and budget) and one entry per invocation (when, which overrides, which budget, the first
trial id it added).

Rules:

- A directory that already holds a run is refused unless ``resume=true``, for every searcher
  (a reused ``hydra.run.dir`` never silently mixes or overwrites two runs).
- ``resume=true`` into a directory that holds no run is an error: "nothing to resume at <path>".
- On resume, any difference from the stored fingerprint is refused with one line naming each
  key and both values, except for the settings in ``RESUME_MAY_CHANGE``:

  - ``dispatch.workers``, ``dispatch.threads_per_worker``, ``dispatch.gpus``,
    ``dispatch.address``, ``dispatch.num_cpus``, ``dispatch.poll_interval_s``: where and how
    wide trials run, not what they compute;
  - ``budget``: may grow (add trials to a finished bandit search), never shrink;
  - ``tracking.*`` and ``trainer.progress``: what is logged and shown;
  - ``report.*``: what the report adds after the trials;
  - ``resume`` itself.
- Nothing in the directory changes before the run is accepted: Hydra is configured to write
  neither ``.hydra/`` nor a log file (``hydra.output_subdir: null``, ``hydra/job_logging:
  stdout``); ``RunDir.open`` writes ``.hydra/``, ``config.yaml`` and ``run.json`` and opens
  ``<command>.log`` once it has accepted the run. An empty directory that Hydra created for a
  refused resume is removed again.
- A run directory made before ``run.json`` existed is checked against its ``config.yaml``; keys
  that file does not have (settings added since) are not compared.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from attnas.cli.errors import UserError

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "resume",
    "budget",
    "dispatch.workers",
    "dispatch.threads_per_worker",
    "dispatch.gpus",
    "dispatch.address",
    "dispatch.num_cpus",
    "dispatch.poll_interval_s",
    "tracking",
    "trainer.progress",
    "report",
)
# Files or folders that mean "a run of an older version lives here" (no run.json yet).
LEGACY_MARKERS = ("trials.sqlite", "search", "result.json", "report.md")

_STARTED = time.time()  # before Hydra creates the run directory
log = logging.getLogger("attnas.cli")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _may_change(key: str) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in RESUME_MAY_CHANGE)


def differences(stored: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``key: stored -> now`` for every key that differs and may not change on resume."""
    old, new = flatten(stored), flatten(now)
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a == b:
            continue
        if key == "budget" and isinstance(a, int) and isinstance(b, int):
            if b < a:
                out.append(f"budget: {a} -> {b} (a budget may grow, not shrink)")
            continue
        if not _may_change(key):
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds a run (this version's ``run.json`` or an older run's files)."""
    if (path / RUN_FILE).is_file():
        return True
    if (path / "trials.sqlite").is_file():
        import sqlite3

        try:
            with sqlite3.connect(path / "trials.sqlite") as conn:
                return bool(conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])
        except sqlite3.Error:
            return True
    return any((path / m).exists() for m in LEGACY_MARKERS if m != "trials.sqlite")


@dataclass
class RunDir:
    """An accepted run directory.

    Attributes:
        path: the directory.
        command: ``attnas-search`` or ``attnas-train``.
        resumed: whether this invocation continues an earlier one.
        invocations: every invocation so far, this one last (dicts, see the module docstring).
    """

    path: Path
    command: str
    resumed: bool
    invocations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        path: Path,
        command: str,
        cfg: Any,
        *,
        resume: bool,
        fingerprint: Mapping[str, Any],
        hydra_files: Mapping[str, str] | None = None,
    ) -> RunDir:
        """Refuse, or accept and record, a run in ``path``.

        Args:
            path: the run directory (Hydra's run directory).
            command: the command's name (messages, ``run.json``, the log file's name).
            cfg: the composed config (written as ``config.yaml``).
            resume: whether the user asked to continue a run.
            fingerprint: what defines the run (plain values; compared on resume).
            hydra_files: ``{name: YAML text}`` written under ``.hydra/`` once accepted.

        Returns:
            The accepted run directory.

        Raises:
            UserError: the run is refused (the message names why); nothing was written.
        """
        path = Path(path)
        exists = holds_run(path)
        if resume and not exists:
            _remove_if_fresh_and_empty(path)
            raise UserError(f"nothing to resume at {path} (resume=true needs an earlier run there)")
        if exists and not resume:
            raise UserError(
                f"{path} already holds a run; pass resume=true to continue it, or choose "
                "another hydra.run.dir"
            )
        record = _read_record(path) if exists else {}
        if exists:
            stored = record.get("fingerprint")
            if stored is None:  # an older run: its config.yaml, which lacks keys added since
                legacy = _legacy_fingerprint(path)  # (and the space's content): those pass
                stored = None if legacy is None else {**flatten(fingerprint), **flatten(legacy)}
            if stored is not None:
                diff = differences(stored, fingerprint)
                if diff:
                    raise UserError(
                        f"cannot resume {path}: settings differ from the run there: "
                        + "; ".join(diff)
                        + f" (only {', '.join(RESUME_MAY_CHANGE)} may change on resume)"
                    )
        invocations = list(record.get("invocations", []))
        invocations.append(
            {
                "invocation": len(invocations) + 1,
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "resume": bool(resume),
                "budget": fingerprint.get("budget"),
            }
        )
        run = cls(path, command, exists, invocations)
        path.mkdir(parents=True, exist_ok=True)
        if hydra_files is not None:
            (path / ".hydra").mkdir(exist_ok=True)
            (path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
            for name, text in hydra_files.items():
                (path / ".hydra" / name).write_text(text)
        (path / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        run._write({"command": command, "fingerprint": dict(fingerprint)})
        run._attach_log()
        return run

    def note(self, **values: Any) -> None:
        """Add ``values`` to this invocation's entry in ``run.json`` (e.g. its first trial id)."""
        self.invocations[-1].update(values)
        self._write(_read_record(self.path))

    def _write(self, record: Mapping[str, Any]) -> None:
        data = {**record, "invocations": self.invocations}
        tmp = self.path / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        tmp.replace(self.path / RUN_FILE)

    def _attach_log(self) -> None:
        root = logging.getLogger()
        for old in [h for h in root.handlers if getattr(h, "_attnas_run_log", False)]:
            root.removeHandler(old)  # one run directory per process at a time
            old.close()
        name = self.command.removeprefix("attnas-")
        handler = logging.FileHandler(self.path / f"{name}.log")
        handler._attnas_run_log = True  # type: ignore[attr-defined]
        handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
        )
        root.addHandler(handler)


def hydra_files() -> dict[str, str]:
    """Hydra's ``.hydra/`` files of the running app (config, hydra, overrides), as YAML."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    files = {"overrides.yaml": yaml.safe_dump(list(hc.overrides.task))}
    files["hydra.yaml"] = OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(hc)}))
    return files


def space_fingerprint(space: Any) -> str:
    """A hash of a space's content (so an edited space file counts as another space)."""
    import hashlib

    text = json.dumps(space.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def first_trial_ids(invocations: Iterable[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """``[(invocation, first trial id)]`` of the invocations that added trials."""
    return [
        (int(i["invocation"]), int(i["first_trial"]))
        for i in invocations
        if i.get("first_trial") is not None
    ]


def _read_record(path: Path) -> dict[str, Any]:
    file = path / RUN_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: not valid JSON ({err}); cannot check the resume") from err


def _legacy_fingerprint(path: Path) -> dict[str, Any] | None:
    file = path / CONFIG_FILE
    if not file.is_file():
        return None
    data = yaml.safe_load(file.read_text()) or {}
    return data if isinstance(data, dict) else None


def _remove_if_fresh_and_empty(path: Path) -> None:
    """Undo Hydra's ``mkdir`` of a run directory that this invocation created (empty)."""
    try:
        if path.is_dir() and not any(path.iterdir()) and path.stat().st_ctime >= _STARTED - 1:
            path.rmdir()
    except OSError:
        pass
