"""Every order the graph allows works: the guide's lab brought up from nothing with apply picking
among ready steps in a seeded random order, one step at a time (RECONCILER_SHUFFLE, --parallelism
1).  A missing dependency edge then fails for a given seed every time, instead of hiding behind
timing.  Real Debian containers, HAProxy checked by real HTTP."""

from __future__ import annotations

import pytest
from test_guide_lab import Guide, guide_lab, until

SEEDS = [11, 22, 33]


class ShuffledGuide(Guide):
    lan_host, http_port = "10.203.43.1", 18500  # its own LAN and ports: it may run beside test_guide_lab


@pytest.fixture(scope="module")
def shuffled(lxd_ready, tmp_path_factory):
    with guide_lab(tmp_path_factory, "shuffled", ShuffledGuide) as lab:
        yield lab


@pytest.mark.parametrize("seed", SEEDS)
def test_the_guide_lab_comes_up_from_nothing_in_a_shuffled_order(shuffled, monkeypatch, seed):
    destroyed = shuffled.run("destroy", "--yes")
    assert destroyed.code == 0, destroyed.out + destroyed.err
    monkeypatch.setenv("RECONCILER_SHUFFLE", str(seed))
    result = shuffled.run("apply", "--yes", "--parallelism", "1")
    assert result.code == 0, f"seed {seed}:\n" + result.out[-4000:] + result.err
    assert until(lambda: shuffled.run("check").code == 0, 30), shuffled.run("check").out
    assert shuffled.run("plan", "--detailed-exitcode").code == 0
