"""scripts/benchmark.py keeps each place's rows from the last run that measured it
(docs/performance.json), so measuring one place never drops another's rows from the doc."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["benchmark"]


def run(when: str, command: str, places: dict[str, list[int]]) -> dict:
    rows = [{"where": where, "n": n, "calls": 7, "plan": 0.5, "apply": float(n), "serial": 2.0 * n,
             "parallel4": float(n), "ratio": 1.0, "plan_runs": [0.5] * 5} for where, sizes in places.items() for n in sizes]
    return {"when": when, "command": command, "load": [1.0, 2.0], "nproc": "2 (cpu)", "system": "kernel k",
            "places": {where: f"{where} facts" for where in places}, "rows": rows}


def test_a_run_of_one_place_keeps_the_other_places_rows_and_says_when_they_were_measured(bench):
    old = run("2026-11-27 06:04 UTC", "scripts/benchmark.py", {"local": [3, 20], "remote": [3], "incus": [3]})
    older = run("2026-11-01 00:00 UTC", "scripts/benchmark.py --where cluster", {"cluster": [3], "local": [3]})
    new = run("2026-12-03 14:10 UTC", "scripts/benchmark.py --where incus", {"incus": [3, 20]})
    runs = bench.merged(new, [old, older])
    assert [(r["where"], r["n"], r["apply"]) for r in bench.all_rows(runs)] == [
        ("local", 3, 3.0), ("local", 20, 20.0), ("remote", 3, 3.0), ("cluster", 3, 3.0), ("incus", 3, 3.0),
        ("incus", 20, 20.0)]
    assert [run["when"] for run in runs] == [new["when"], old["when"], older["when"]]
    text = bench.report(runs, None)
    assert text.startswith("Measured 2026-12-03 14:10 UTC with `scripts/benchmark.py --where incus`; the local,"
                           " remote rows kept from 2026-11-27 06:04 UTC (`scripts/benchmark.py`); the cluster rows"
                           " kept from 2026-11-01 00:00 UTC (`scripts/benchmark.py --where cluster`):")
    assert "| incus | 20 |" in text and "- incus: incus facts" in text and "- local: local facts" in text


def test_the_committed_results_are_the_docs_table(bench):
    """docs/performance.json and the table in docs/performance.md say the same."""
    runs = json.loads(bench.DATA.read_text())["runs"]
    doc = bench.DOC.read_text()
    block = doc.split(bench.START, 1)[1].split(bench.END, 1)[0]
    assert bench.table(bench.all_rows(runs)) in block
