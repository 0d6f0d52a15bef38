"""The searcher study (``experiments/searcher_study.py``) through the simulated backend.

The fast test is the issue's 3-seed, 30-trial study, with 1 and 8 workers, on a complete
synthetic table of 164 cells, for the searchers that take milliseconds per suggestion (random,
evolution, Optuna TPE); the slow one runs every default searcher (the GPs take seconds per
suggestion on 2 cores), and an ablation runs only when named. Nothing here checks a speed or
which searcher wins.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnas.benchmark import write_table
from attnas.controller import GPBandit

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `experiments` is a folder of scripts, not an installed package

from experiments import searcher_study as st  # noqa: E402

FAST = ("random", "evolution", "optuna_tpe")


@pytest.fixture(scope="module")
def bench():
    return st.open_table("synthetic-small")


def check_payload(payload, bench, searchers, seeds=3, budget=30) -> None:
    assert payload["table_complete"] and payload["cells"] == len(bench) == 164
    assert not payload["versions"]["optuna"].startswith("not importable")
    assert payload["unavailable"] == {}
    runs = payload["runs"]
    assert len(runs) == len(searchers) * seeds * 2
    for run in runs:
        assert "error" not in run, run.get("error")
        assert len(run["trials"]) == budget == len(set(run["trials"]))  # distinct cells
        assert all(m is not None for m in run["true_means"]) and run["failed"] == 0
        assert run["searcher_s"] >= 0 and run["suggestions"] >= 1
    assert set(payload["summary"]) == {f"{s}/w{w}" for s in searchers for w in (1, 8)}
    for s in payload["summary"].values():
        t = s["trials_to_top1pct"]
        assert t["seeds"] == seeds and 1 <= t["mean"] <= budget
        assert t["ci95"][0] <= t["mean"] <= t["ci95"][1]
        regrets = [s["regret"][str(b)]["mean"] for b in payload["budgets"]]
        assert all(r >= 0 for r in regrets) and regrets == sorted(regrets, reverse=True)


def test_quick_study_of_the_fast_searchers(bench, tmp_path: Path):
    out = tmp_path / "study.json"
    payload = st.study(bench, searchers=FAST, seeds=3, workers=(1, 8), budgets=(10, 20, 30),
                       out=out, progress=False)  # fmt: skip
    check_payload(payload, bench, FAST)
    assert json.loads(out.read_text())["summary"] == json.loads(json.dumps(payload["summary"]))
    assert out.with_suffix(".png").stat().st_size > 0
    assert payload["goals"] == []  # no GPB in this study
    text = st.format_summary(payload)
    assert "optuna_tpe/w8" in text


def test_run_figures_on_a_known_run(bench):
    top = [c.hash() for c in bench.top(0.01)]
    best = bench.best().hash()
    others = [c.hash() for c in bench.cells() if c.hash() not in top][:3]
    trials = [others[0], others[1], top[-1], others[2], best]
    run = {"trials": trials, "true_means": [bench.mean(h) for h in trials]}
    m = st.run_metrics(bench, run, budgets=(1, 3, 5))
    assert m["trials_to_top1pct"] == 3 and m["trials_to_best"] == 5
    assert m["regret"]["5"] == 0.0
    assert m["regret"]["3"] == pytest.approx(bench.optimum() - max(run["true_means"][:3]))
    censored = st._censored([3, None, 5], cap=30)
    assert censored["reached"] == 2 and censored["lower_bound"]
    assert censored["mean"] == pytest.approx((3 + 30 + 5) / 3)
    value, low, high = st.ratio_ci([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])
    assert value == pytest.approx(0.5) and low <= value <= high
    assert st.bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)


def test_goals_compare_gpb_with_random_the_best_peer_and_one_worker():
    def group(name, w, per_seed, regret):
        return {
            "searcher": name,
            "workers": w,
            "trials_to_top1pct": {"per_seed": per_seed, "mean": sum(per_seed) / len(per_seed)},
            "regret": {"50": {"mean": regret, "ci95": [regret, regret]}},
        }

    summary = {
        "gpb/w1": group("gpb", 1, [10, 12], 0.01),
        "random/w1": group("random", 1, [40, 44], 0.05),
        "optuna_tpe/w1": group("optuna_tpe", 1, [20, 22], 0.02),
        "optuna_gp/w1": group("optuna_gp", 1, [8, 10], 0.0),
        "gpb/w8": group("gpb", 8, [15, 18], 0.02),
    }
    rows = {r["goal"]: r for r in st.goals(summary, budgets=(25, 50))}
    assert rows["gpb/random trials to top 1 % (w=1)"]["value"] == pytest.approx(22 / 84)
    assert rows["gpb/random trials to top 1 % (w=1)"]["met"]
    peer = rows["gpb/best peer (optuna_gp) trials to top 1 % (w=1)"]
    assert peer["value"] == pytest.approx(22 / 18) and not peer["met"]
    assert not rows["gpb regret at 50 against the best peer's (optuna_gp, w=1)"]["met"]
    assert rows["gpb 8 workers / 1 worker trials to top 1 %"]["value"] == pytest.approx(1.5)
    # a GPB variant against default GPB at the same worker count (censored seeds count as 50)
    summary["gpb_onehot/w1"] = group("gpb_onehot", 1, [5, 1], 0.0)
    summary["gpb_onehot/w1"]["trials_to_top1pct"]["per_seed"] = [5, None]
    (row,) = st.variants(summary, budgets=(25, 50))
    assert row["variant"] == "gpb_onehot/w1" and row["against"] == "gpb/w1"
    assert row["seeds"] == [2, 2]
    assert row["trials_to_top1pct_ratio"] == pytest.approx(55 / 22)
    assert row["regret@50"] == [0.0, 0.01] and not row["paired"]  # no seed ids: unpaired
    for key in ("gpb/w1", "gpb_onehot/w1"):
        summary[key]["seed_ids"] = [0, 1]
    (paired,) = st.variants(summary, budgets=(25, 50))
    assert paired["paired"] and paired["trials_to_top1pct_ratio"] == row["trials_to_top1pct_ratio"]
    # pairs resampled together: every resample is a mean of (5, 10) and (50, 12) pairs
    assert paired["ci95"][0] >= 5 / 10 - 1e-12 and paired["ci95"][1] <= 50 / 12 + 1e-12
    with pytest.raises(ValueError, match="paired ratio needs as many"):
        st.ratio_ci([1, 2], [1, 2, 3], paired=True)
    # a ``_beta1`` variant is judged against ``gpb_beta1``, not the default
    summary["gpb_beta1/w1"] = group("gpb_beta1", 1, [20, 24], 0.02)
    summary["gpb_onehot_beta1/w1"] = group("gpb_onehot_beta1", 1, [11, 11], 0.01)
    rows = {r["variant"]: r for r in st.variants(summary, budgets=(25, 50))}
    assert rows["gpb_beta1/w1"]["against"] == "gpb/w1"
    assert rows["gpb_beta1/w1"]["trials_to_top1pct_ratio"] == pytest.approx(44 / 22)
    assert rows["gpb_onehot_beta1/w1"]["against"] == "gpb_beta1/w1"
    assert rows["gpb_onehot_beta1/w1"]["trials_to_top1pct_ratio"] == pytest.approx(22 / 44)


def test_gpb_configs_record_every_argument_and_the_variant_over_the_default():
    base, beta1 = st.gpb_config("gpb"), st.gpb_config("gpb_beta1")
    assert base["beta_scale"] == GPBandit(st.small_space()).beta.scale == 0.2
    assert {k for k in base if base[k] != beta1[k]} == {"beta_scale"} and beta1["beta_scale"] == 1
    assert st.gpb_config("gpb_oneshot")["prior_mean"] == st.ONESHOT_SCORES.name
    assert set(st.GPB_SEARCHERS) <= set(st.SEARCHERS)


def test_runs_made_under_another_gpb_config_are_refused_not_relabelled(bench, tmp_path: Path):
    out = tmp_path / "study.json"
    kwargs = dict(seeds=1, workers=(1,), budgets=(5,), out=out, progress=False)
    st.study(bench, searchers=("gpb", "random"), **kwargs)
    payload = json.loads(out.read_text())
    assert payload["configs"] == {"gpb": st.gpb_config("gpb")}
    before = out.read_bytes()
    payload["configs"]["gpb"]["beta_scale"] = 1.0  # as if made before the default moved
    out.write_text(json.dumps(payload))
    with pytest.raises(
        ValueError, match=r"its gpb runs are not this study's gpb .*beta_scale=1\.0"
    ):
        st.study(bench, searchers=("gpb", "random"), **kwargs)
    del payload["configs"]  # a study from before configs were recorded
    out.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="records no configuration for them"):
        st.study(bench, searchers=("gpb", "random"), **kwargs)
    # searchers without a GPB config resume as before; the file is kept as it was
    assert st.study(bench, searchers=("random",), seeds=1, workers=(1,), budgets=(5,),
                    progress=False)["runs"]  # fmt: skip
    assert json.loads(out.read_text())["runs"] == json.loads(before)["runs"]


def test_an_unavailable_peer_is_reported_not_run(bench, monkeypatch):
    def why(name):
        return (
            "optuna_gp needs optuna, which cannot be imported (test)"
            if name == "optuna_gp"
            else None
        )

    monkeypatch.setattr(st, "peer_unavailable", why)
    payload = st.study(bench, searchers=("random", "optuna_gp"), seeds=1, workers=(1,),
                       budgets=(5,), progress=False)  # fmt: skip
    assert payload["unavailable"] == {"optuna_gp": why("optuna_gp")}
    assert {r["searcher"] for r in payload["runs"]} == {"random"}
    assert "optuna_gp: cannot run here: optuna_gp needs optuna" in st.format_summary(payload)


def test_an_incomplete_table_is_refused_unless_allowed(bench, tmp_path: Path):
    folder = tmp_path / "partial"
    folder.mkdir()
    cells = bench.cells()[:20]
    write_table(folder / "table.csv", [r for c in cells for r in bench.rows(c)])
    manifest = {**bench.manifest, "complete": False, "cells_done": 20, "cells_total": 164}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"not complete \(20 of 164 cells\)"):
        st.open_table(str(folder))
    partial = st.open_table(str(folder), allow_partial=True)
    payload = st.study(partial, searchers=("random",), seeds=1, workers=(1,), budgets=(10,),
                       progress=False)  # fmt: skip
    assert payload["runs"][0]["failed"] > 0  # cells missing from the table fail
    assert st.main(["--table", str(folder), "--quick"]) == 2


def test_an_ablation_runs_only_when_named(bench):
    assert set(st.ABLATIONS) <= set(st.SEARCHERS) and not set(st.ABLATIONS) & set(
        st.DEFAULT_SEARCHERS
    )
    payload = st.study(bench, searchers=("gpb_cold",), seeds=1, workers=(1,), budgets=(10,),
                       progress=False)  # fmt: skip
    (run,) = payload["runs"]
    assert run["searcher"] == "gpb_cold" and "error" not in run, run.get("error")
    assert len(set(run["trials"])) == 10 and run["failed"] == 0
    assert set(payload["summary"]) == {"gpb_cold/w1"}


@pytest.mark.slow
def test_quick_study_of_every_searcher(bench, tmp_path: Path):
    # 2 seeds of 20 trials: the GP searchers take seconds per suggestion on 2 cores, and the
    # whole slow stage of CI must stay within its budget
    payload = st.study(bench, seeds=2, workers=(1, 8), budgets=(10, 20),
                       out=tmp_path / "all.json", progress=False)  # fmt: skip
    check_payload(payload, bench, st.DEFAULT_SEARCHERS, seeds=2, budget=20)
    assert not set(st.ABLATIONS) & {run["searcher"] for run in payload["runs"]}
    assert {g["goal"].split(" (")[0] for g in payload["goals"]} >= {"gpb/random trials to top 1 %"}
    assert all(math.isfinite(g["value"]) for g in payload["goals"])


def test_an_interrupted_study_resumes_and_keeps_what_it_ran(bench, tmp_path: Path, monkeypatch):
    out = tmp_path / "study.json"
    kwargs = dict(searchers=("random", "evolution"), workers=(1,), budgets=(10,), out=out,
                  progress=False)  # fmt: skip
    first = st.study(bench, seeds=1, **kwargs)
    ran = []
    real = st.run_one
    monkeypatch.setattr(
        st, "run_one", lambda b, n, s, w, *a: ran.append((n, s, w)) or real(b, n, s, w, *a)
    )
    second = st.study(bench, seeds=2, **kwargs)  # one more seed: only the new runs run
    assert ran == [("random", 1, 1), ("evolution", 1, 1)]
    assert [st._key(r) for r in second["runs"]] == [
        ("random", 0, 1), ("random", 1, 1), ("evolution", 0, 1), ("evolution", 1, 1)
    ]  # fmt: skip
    assert second["runs"][0]["trials"] == first["runs"][0]["trials"]
    assert second["summary"]["random/w1"]["trials_to_top1pct"]["seeds"] == 2
    ran.clear()
    st.study(bench, seeds=2, **kwargs)
    assert ran == []  # nothing left to run
    # what cannot be resumed is refused, naming the file, and the file is untouched
    before = out.read_text()
    with pytest.raises(ValueError, match=r"study\.json: holds 2 finished runs outside"):
        st.study(bench, seeds=1, **kwargs)
    with pytest.raises(ValueError, match=r"study\.json: holds runs to 10 trials"):
        st.study(bench, seeds=2, **{**kwargs, "budgets": (20,)})
    other = st.open_table("synthetic")
    with pytest.raises(ValueError, match=r"study\.json: holds a study with another table"):
        st.study(other, seeds=2, **kwargs)
    assert out.read_text() == before
    assert st.main(["--table", "synthetic-small", "--searchers", "random", "--seeds", "1",
                    "--workers", "1", "--budgets", "10", "--out", str(out)]) == 2  # fmt: skip
    fresh = st.study(bench, seeds=1, resume=False, **{**kwargs, "searchers": ("random",)})
    assert len(fresh["runs"]) == 1


def test_runs_go_seed_by_seed_and_are_stored_by_searcher(bench, monkeypatch):
    ran = []
    real = st.run_one
    monkeypatch.setattr(
        st, "run_one", lambda b, n, s, w, *a: ran.append((n, s, w)) or real(b, n, s, w, *a)
    )
    payload = st.study(bench, searchers=("random", "evolution"), seeds=2, workers=(1, 8),
                       budgets=(10,), progress=False)  # fmt: skip
    assert ran == [
        ("random", 0, 1), ("evolution", 0, 1), ("random", 0, 8), ("evolution", 0, 8),
        ("random", 1, 1), ("evolution", 1, 1), ("random", 1, 8), ("evolution", 1, 8),
    ]  # fmt: skip
    assert [st._key(r) for r in payload["runs"]] == [
        ("random", 0, 1), ("random", 1, 1), ("evolution", 0, 1), ("evolution", 1, 1),
        ("random", 0, 8), ("random", 1, 8), ("evolution", 0, 8), ("evolution", 1, 8),
    ]  # fmt: skip


def test_runs_in_job_processes_equal_runs_in_one(bench):
    kwargs = dict(searchers=("random", "optuna_tpe"), seeds=2, workers=(1, 8), budgets=(10,),
                  progress=False)  # fmt: skip
    serial, parallel = st.study(bench, **kwargs), st.study(bench, jobs=2, **kwargs)
    assert [(st._key(r), r["trials"]) for r in parallel["runs"]] == [
        (st._key(r), r["trials"]) for r in serial["runs"]
    ]
    assert parallel["machine"]["jobs"] == 2
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        st.study(bench, jobs=0, **kwargs)
    fresh = st.study(bench, searchers=("random",), seeds=2, first_seed=5, workers=(1,),
                     budgets=(5,), progress=False)  # fmt: skip
    assert [r["seed"] for r in fresh["runs"]] == [5, 6] and fresh["first_seed"] == 5
    with pytest.raises(ValueError, match="first seed must be >= 0"):
        st.study(bench, first_seed=-1, **kwargs)


def _oneshot_json(path: Path, bench, cells) -> None:
    """An ``oneshot_ranking`` result scoring ``cells`` by their table mean (a perfect prior)."""
    rows = [{"cell_hash": c.hash(), "oneshot_top1_recalibrate": [bench.mean(c)]} for c in cells]
    seeds = [{"seed": 0, "search_seconds": 300.0,
              "modes": {"recalibrate": {"seconds_per_cell": 1.5}}}]  # fmt: skip
    path.write_text(json.dumps({"cells": rows, "seeds": seeds}))


def test_gpb_with_the_oneshot_prior_runs_and_says_what_the_prior_cost(
    bench, tmp_path: Path, monkeypatch
):
    scores = tmp_path / "oneshot.json"
    _oneshot_json(scores, bench, bench.cells())
    monkeypatch.setattr(st, "ONESHOT_SCORES", scores)
    payload = st.study(bench, searchers=("gpb_oneshot",), seeds=1, workers=(1,), budgets=(10,),
                       progress=False)  # fmt: skip
    (run,) = payload["runs"]
    assert "error" not in run, run.get("error")
    assert len(set(run["trials"])) == 10 and run["failed"] == 0
    prior = payload["priors"]["gpb_oneshot"]
    assert (prior["cells"], prior["search_s"]) == (164, 300.0)
    assert prior["scoring_s"] == pytest.approx(1.5 * 164)
    assert prior["cpu_s"] == pytest.approx(300 + 1.5 * 164)
    ratio = prior["cpu_s"] / prior["trial_s_mean"]
    assert prior["trials_equivalent"] == pytest.approx(ratio, abs=0.1)
    # the perfect prior: a top-1 % cell within the first trials after the random ones
    assert run["true_means"].index(max(run["true_means"])) < 6


def test_gpb_oneshot_without_scores_for_every_cell_is_reported_not_run(
    bench, tmp_path: Path, monkeypatch
):
    scores = tmp_path / "oneshot.json"
    _oneshot_json(scores, bench, bench.cells()[:100])
    monkeypatch.setattr(st, "ONESHOT_SCORES", scores)
    payload = st.study(bench, searchers=("random", "gpb_oneshot"), seeds=1, workers=(1,),
                       budgets=(5,), progress=False)  # fmt: skip
    why = payload["unavailable"]["gpb_oneshot"]
    assert str(scores) in why and "64 of the table's 164 cells" in why
    assert {r["searcher"] for r in payload["runs"]} == {"random"}
    monkeypatch.setattr(st, "ONESHOT_SCORES", tmp_path / "absent.json")
    payload = st.study(bench, searchers=("gpb_oneshot",), seeds=1, workers=(1,), budgets=(5,),
                       progress=False)  # fmt: skip
    assert "absent.json: missing" in payload["unavailable"]["gpb_oneshot"]


def test_the_command_line_continues_the_searchers_the_study_holds(bench, tmp_path: Path):
    out = tmp_path / "study.json"
    assert st.default_searchers(out) == list(st.DEFAULT_SEARCHERS)  # no study yet
    st.study(bench, searchers=("random", "gpb_cold"), seeds=1, workers=(1,), budgets=(5,),
             out=out, progress=False)  # fmt: skip
    assert st.default_searchers(out) == [*st.DEFAULT_SEARCHERS, "gpb_cold"]
    assert st.default_searchers(out, resume=False) == list(st.DEFAULT_SEARCHERS)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_a_parallel_study_leaves_no_job_process(tmp_path: Path):
    script = (
        "from experiments import searcher_study as st\n"
        "st.study(st.open_table('synthetic-small'), searchers=('gpb',), seeds=8, workers=(1,),\n"
        "         budgets=(60,), out=None, progress=False, jobs=2)\n"
    )
    study = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        children: set[int] = set()
        deadline = time.monotonic() + 120
        while len(children) < 2 and time.monotonic() < deadline:  # the pool's two job processes
            children = {
                int(pid)
                for task in Path(f"/proc/{study.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()
            }
            time.sleep(0.2)
        assert len(children) >= 2, "the study started no job processes"
        time.sleep(2)  # the jobs have run their initializer and are running
        study.kill()  # SIGKILL: no handler, no executor shutdown
        study.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        study.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
