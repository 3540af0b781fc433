"""VNN-LIB parsing: every shape found in the benchmarks, and the meaning of the resulting Property."""
from __future__ import annotations

import time

import numpy as np
import pytest

from bnb.errors import SpecError
from bnb.io.vnnlib import parse_vnnlib, parse_vnnlib_text

from conftest import BENCHMARKS, acas, require_bench

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

DECL = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + \
       "".join(f"(declare-const Y_{j} Real)\n" for j in range(3))
BOX = "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 2))\n"


def violated(prop, y) -> bool:
    """Does output ``y`` reach one of the polytopes (of the single box)?"""
    (spec,) = prop.specs
    return any(p.margin(np.asarray(y, float)[None])[0] <= 0 for p in spec.disjuncts)


# ------------------------------------------------------------------------ ACAS Xu shapes
def test_acas_prop_1_single_constraint():
    prop = parse_vnnlib(acas("1_1", "prop_1")[1], 5, 5)
    assert (prop.n_inputs, prop.n_outputs) == (5, 5)
    (spec,) = prop.specs
    np.testing.assert_allclose(spec.lower, [0.6, -0.5, -0.5, 0.45, -0.5])
    np.testing.assert_allclose(spec.upper, [0.679857769, 0.5, 0.5, 0.5, -0.45])
    (poly,) = spec.disjuncts
    assert poly.C.shape == (1, 5)
    # (>= Y_0 3.991125645861615)
    assert violated(prop, [3.9912, 0, 0, 0, 0]) and violated(prop, [3.991125645861615, 0, 0, 0, 0])
    assert not violated(prop, [3.99, 100, 100, 100, 100])


def test_acas_prop_2_conjunction():
    prop = parse_vnnlib(acas("1_2", "prop_2")[1], 5, 5)
    (spec,) = prop.specs
    (poly,) = spec.disjuncts  # Y_0 is the maximum: Y_0 >= Y_j for j = 1..4
    assert poly.C.shape == (4, 5)
    assert violated(prop, [1, 0, 0, 0, 0])
    assert violated(prop, [1, 1, 1, 1, 1])  # ties count (non-strict)
    assert not violated(prop, [1, 0, 0, 2, 0])


def test_acas_prop_6_two_boxes():
    prop = parse_vnnlib(acas("1_1", "prop_6")[1], 5, 5)
    assert len(prop.specs) == 2  # a top-level (or (and box1) (and box2))
    a, b = prop.specs
    assert a.lower[1] > 0 and b.upper[1] < 0  # the two boxes differ in X_1
    for spec in prop.specs:
        assert np.all(spec.lower <= spec.upper)
        assert len(spec.disjuncts) == 4  # Y_0 is not the minimum: Y_j <= Y_0 for some j
        for p in spec.disjuncts:
            assert p.C.shape == (1, 5)
        y_ok, y_bad = np.array([[0, 1, 1, 1, 1.0]]), np.array([[1, 1, 0.5, 1, 1.0]])
        assert all(p.margin(y_ok)[0] > 0 for p in spec.disjuncts)
        assert any(p.margin(y_bad)[0] <= 0 for p in spec.disjuncts)


def test_acas_prop_7_or_of_ands():
    prop = parse_vnnlib(acas("1_9", "prop_7")[1], 5, 5)
    (spec,) = prop.specs
    assert len(spec.disjuncts) == 2 and all(p.C.shape == (3, 5) for p in spec.disjuncts)
    assert violated(prop, [1, 1, 1, 0, 5])      # Y_3 is <= Y_0, Y_1, Y_2
    assert violated(prop, [1, 1, 1, 5, 0])      # Y_4 is
    assert not violated(prop, [0, 1, 1, 0.5, 0.5])


# ------------------------------------------------------------------------ MNIST / CIFAR
def test_mnist_784_input_box():
    folder = require_bench("mnist_fc")
    prop = parse_vnnlib(folder / "vnnlib" / "prop_0_0.03.vnnlib", 784, 10)
    (spec,) = prop.specs
    assert spec.lower.shape == (784,) and np.all(spec.lower <= spec.upper)
    assert np.all(spec.lower >= 0) and np.all(spec.upper <= 1)
    assert np.all(spec.upper - spec.lower <= 0.06 + 1e-6)
    assert len(spec.disjuncts) == 9  # some other class beats the label


def test_largest_mnist_file_parses_fast():
    files = [p for b in ("mnist_fc", "mnist_fc_2022") for p in (require_bench(b) / "vnnlib").glob("*.vnnlib")]
    largest = max(files, key=lambda p: p.stat().st_size)
    parse_vnnlib(largest)  # warm-up (imports, regex compilation)
    t = time.perf_counter()
    prop = parse_vnnlib(largest, 784, 10)
    elapsed = time.perf_counter() - t
    assert prop.n_inputs == 784
    assert elapsed < 0.5, f"parsing {largest.name} took {elapsed:.2f}s"


def test_oval21_cifar_box():
    folder = require_bench("oval21")
    path = sorted((folder / "vnnlib").glob("*.vnnlib"))[0]
    prop = parse_vnnlib(path, 3072, 10)
    assert prop.specs[0].lower.shape == (3072,)


# ------------------------------------------------------------------------ terms and semantics
def test_linear_terms_plus_minus_times():
    text = DECL + BOX + "(assert (<= (+ Y_0 (* 2 Y_1) (- Y_2)) (- 3 (* 0.5 Y_2))))\n"
    # Y_0 + 2 Y_1 - Y_2 <= 3 - 0.5 Y_2  <=>  Y_0 + 2 Y_1 - 0.5 Y_2 <= 3
    prop = parse_vnnlib_text(text)
    (poly,) = prop.specs[0].disjuncts
    rng = np.random.default_rng(0)
    for y in rng.normal(scale=3, size=(200, 3)):
        holds = y[0] + 2 * y[1] - 0.5 * y[2] <= 3
        assert (poly.margin(y[None])[0] <= 0) == holds


def test_times_with_constant_on_the_right_and_division():
    text = DECL + BOX + "(assert (>= (* Y_0 -2) (/ Y_1 4)))\n"
    (poly,) = parse_vnnlib_text(text).specs[0].disjuncts
    for y in np.random.default_rng(1).normal(size=(100, 3)):
        assert (poly.margin(y[None])[0] <= 0) == (-2 * y[0] >= y[1] / 4)


def test_equality_is_two_inequalities():
    text = DECL + BOX + "(assert (= Y_0 Y_1))\n"
    (poly,) = parse_vnnlib_text(text).specs[0].disjuncts
    assert poly.C.shape == (2, 3)
    assert poly.margin(np.array([[1.5, 1.5, 9.0]]))[0] <= 0
    assert poly.margin(np.array([[1.5, 1.6, 9.0]]))[0] > 0


def test_equality_on_inputs_gives_a_point():
    text = DECL + "(assert (= X_0 0.25))\n(assert (>= X_1 0))\n(assert (<= X_1 2))\n(assert (<= Y_0 0))\n"
    (spec,) = parse_vnnlib_text(text).specs
    assert spec.lower[0] == spec.upper[0] == 0.25


def test_input_bounds_written_either_way_round():
    text = DECL + "(assert (<= -1 X_0))\n(assert (>= 1 X_0))\n(assert (<= (* 2 X_1) 4))\n" \
                  "(assert (>= (- X_1) 1))\n(assert (<= Y_0 0))\n"
    # X_1 <= 2 and -X_1 >= 1 <=> X_1 <= -1: needs a lower bound -> error; add one
    text += "(assert (>= X_1 -3))\n"
    (spec,) = parse_vnnlib_text(text).specs
    np.testing.assert_allclose(spec.lower, [-1, -3])
    np.testing.assert_allclose(spec.upper, [1, -1])


def test_top_level_and_or_combinations_build_dnf():
    text = DECL + BOX + "(assert (or (<= Y_0 0) (<= Y_1 0)))\n(assert (or (<= Y_2 0) (>= Y_2 5)))\n"
    (spec,) = parse_vnnlib_text(text).specs
    assert len(spec.disjuncts) == 4
    prop = parse_vnnlib_text(text)
    assert violated(prop, [-1, 1, -1]) and violated(prop, [1, -1, 6])
    assert not violated(prop, [1, 1, -1]) and not violated(prop, [-1, 1, 2])


def test_comments_and_blank_lines():
    text = "; header comment\n\n" + DECL + "; box\n" + BOX + "(assert (<= Y_0 1)) ; trailing\n"
    assert parse_vnnlib_text(text).n_disjuncts == 1


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize("body,pattern,line", [
    ("(assert (<= Y_0 1)", "unbalanced", 6),
    ("(assert (<= Y_0 1)))", "unbalanced", 6),
    ("(assert (<= Y_7 1))", "Y_7", 6),
    ("(assert (< Y_0 1))", "not part of VNN-LIB", 6),
    ("(assert (<= (* Y_0 Y_1) 1))", "not linear", 6),
    ("(assert (<= (+ X_0 X_1) 1))", "box", 6),
    ("(assert (<= (+ X_0 Y_1) 1))", "mix", 6),
    ("(assert (<= Y_0 foo))", "foo", 6),
])
def test_errors_name_file_and_line(body, pattern, line):
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + \
           "".join(f"(declare-const Y_{j} Real)\n" for j in range(3)) + body + "\n" + BOX
    with pytest.raises(SpecError, match=pattern) as e:
        parse_vnnlib_text(text, "prop.vnnlib")
    assert str(e.value).startswith(f"prop.vnnlib:{line}: ")


def test_unbounded_and_empty_boxes():
    with pytest.raises(SpecError, match="no lower bound"):
        parse_vnnlib_text(DECL + "(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n", "p")
    with pytest.raises(SpecError, match="empty input box"):
        parse_vnnlib_text(DECL + "(assert (>= X_0 1))\n(assert (<= X_0 0))\n"
                                 "(assert (>= X_1 0))\n(assert (<= X_1 1))\n", "p")


def test_size_mismatch_with_network():
    with pytest.raises(SpecError, match="declares 2 inputs but the network has 5"):
        parse_vnnlib_text(DECL + BOX, "p", n_inputs=5, n_outputs=3)
    with pytest.raises(SpecError, match="declares 3 outputs"):
        parse_vnnlib_text(DECL + BOX, "p", n_inputs=2, n_outputs=10)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        parse_vnnlib(tmp_path / "absent.vnnlib")


# ------------------------------------------------------------------------ every benchmark file
@pytest.mark.slow
@pytest.mark.parametrize("bench_name", BENCHMARKS)
def test_every_benchmark_property_parses(bench_name):
    folder = require_bench(bench_name)
    files = sorted((folder / "vnnlib").glob("*.vnnlib"))
    assert files
    for path in files:
        prop = parse_vnnlib(path)
        assert prop.specs and prop.n_disjuncts >= 1
        for spec in prop.specs:
            assert np.all(spec.lower <= spec.upper)
            for p in spec.disjuncts:
                assert p.C.shape == (len(p.d), prop.n_outputs)


def test_gzipped_file_reads_as_the_plain_one(tmp_path):
    """VNN-COMP ships ``.vnnlib.gz``: the parser decompresses it (and names the file when it is not gzip)."""
    import gzip

    _, spec = acas("2_1", "prop_2")
    gz = tmp_path / "prop_2.vnnlib.gz"
    gz.write_bytes(gzip.compress(spec.read_bytes()))
    a, b = parse_vnnlib(gz, 5, 5), parse_vnnlib(spec, 5, 5)
    np.testing.assert_array_equal(a.specs[0].lower, b.specs[0].lower)
    np.testing.assert_array_equal(a.specs[0].disjuncts[0].C, b.specs[0].disjuncts[0].C)
    fake = tmp_path / "plain.vnnlib.gz"
    fake.write_bytes(spec.read_bytes())
    with pytest.raises(SpecError, match="plain.vnnlib.gz: cannot read"):
        parse_vnnlib(fake)
