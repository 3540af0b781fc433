"""The mutation score (benchmarks/mutants.py): every mutation still applies to the current tree (exactly one
occurrence of its old text), and, in the slow tier, one mutant run end to end is caught by at least two tests
while the unmutated copy passes the same tests."""
from __future__ import annotations

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import mutants as M  # noqa: E402


@pytest.mark.fast
def test_every_mutation_applies_exactly_once():
    assert M.check(ROOT) == []
    assert len(M.MUTANTS) >= 12
    for m in M.MUTANTS:
        assert m.tests, f"{m.name} names no tests"
        run, _ = M.present(m.tests, ROOT)
        assert run, f"none of {m.name}'s tests exists"


@pytest.mark.fast
def test_check_reports_an_edit_that_no_longer_applies(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\nx = 1\n")
    twice = M.Mutant("twice", "a.py", "x = 1", "x = 2", "", ("tests/test_x.py",))
    gone = M.Mutant("gone", "a.py", "y = 1", "y = 2", "", ("tests/test_x.py",))
    problems = M.check(tmp_path, (twice, gone))
    assert len(problems) == 2 and "2 times" in problems[0] and "0 times" in problems[1]


@pytest.mark.slow
def test_one_mutant_end_to_end():
    """The baseline copy passes the tests of ``verdict_ge``; the mutated copy fails at least two of them."""
    m = M.BY_NAME["verdict_ge"]
    base = M.baseline([m], timeout=600)
    assert base["outcomes"] and not M.failed(base["outcomes"]) and not base["timed_out"]
    res = M.run_mutant(m, timeout=600)
    assert not res["timed_out"] and len(M.functions(res["caught"])) >= M.MIN_CAUGHT, res["tail"]
    assert set(res["caught"]) <= set(res["outcomes"])
