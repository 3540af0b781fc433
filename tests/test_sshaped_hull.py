"""The tight hull of one neuron f(w.x + b) over a box (relaxations/sshaped_hull.py) against independent ground
truth: the figures of SSHAPED.md section 1 (tie points, the sigma(x1 + x2) vertex), the convex hull of the graph
computed as an LP over a dense grid (HiGHS through scipy), and dense sampling of each cut's violation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from relaxations import sshaped_hull as H
from relaxations import transcendental as tr

KINDS = tr.KINDS
# max |f''|: the interpolation error of f(w.x + b) on one simplex of a grid is at most max|f''| ds^2 / 8
F2 = {"sigmoid": 1 / (6 * np.sqrt(3)), "tanh": 4 / (3 * np.sqrt(3)), "softplus": 0.25}


def f(kind, z):
    return np.asarray(tr.value(kind, torch.as_tensor(np.asarray(z, dtype=np.float64))))


def grid(L, U, G):
    return np.array(list(itertools.product(*[np.linspace(lo, hi, G) for lo, hi in zip(L, U)])))


def sampled_hull(P, fv, x, upper):
    """max (upper) / min of sum_g lam_g f(p_g) with sum lam_g p_g = x, sum lam_g = 1, lam >= 0."""
    A = np.vstack([P.T, np.ones(len(P))])
    r = linprog(-fv if upper else fv, A_eq=A, b_eq=np.concatenate([x, [1.0]]), bounds=(0, None), method="highs")
    assert r.status == 0
    return -r.fun if upper else r.fun


def resolution(kind, w, L, U, G):
    """A bound of (true hull - hull of the grid's graph points): f is within max|f''| ds^2 / 8 of its
    piecewise-linear interpolant on a triangulation of the grid (ds: the range of w.x on one cell), and that
    interpolant's hull is the LP's."""
    ds = float(np.sum(np.abs(w) * (U - L) / (G - 1)))
    return F2[kind] * ds ** 2 / 8 + 1e-9


@pytest.mark.parametrize("kind,l,zhat", [("sigmoid", -4, 1.5398), ("sigmoid", -1, 0.4881),
                                         ("tanh", -2, 0.7699), ("tanh", -4, 1.1110)])
def test_tie_points_match_sshaped(kind, l, zhat):
    z = float(H.tie_levels(kind, np.array([float(l)]))[0])
    assert z == pytest.approx(zhat, abs=5e-5)
    slope = float(tr.deriv(kind, torch.tensor(z, dtype=torch.float64)))
    assert slope * (z - l) == pytest.approx(float(f(kind, z) - f(kind, l)), abs=1e-12)  # the tie equation
    if (kind, l) == ("sigmoid", -4):
        assert slope == pytest.approx(0.14539, abs=5e-6)


@pytest.mark.parametrize("kind,hull,hull1d", [("sigmoid", 0.5, 0.5996), ("tanh", 0.0, 0.4123)])
def test_sigma_x1_plus_x2_vertex_figure(kind, hull, hull1d):
    """y = f(x1 + x2) on [-2, 2]^2 at the vertex (2, -2): the multi-input hull is exact there (a vertex), the
    one-dimensional hull in s = x1 + x2 in [-4, 4] is its secant from -4 to the tie point at s = 0."""
    w, L, U, x = np.ones(2), -2 * np.ones(2), 2 * np.ones(2), np.array([2.0, -2.0])
    beta, alpha = H.upper_cut(kind, w, 0.0, L, U, x)
    assert alpha + beta @ x == pytest.approx(hull, abs=1e-12)
    assert alpha + beta @ x >= hull  # raised by the exact check, never below f at a vertex
    z = float(H.tie_levels(kind, np.array([-4.0]))[0])
    one_d = float(f(kind, -4.0)) + float(tr.deriv(kind, torch.tensor(z, dtype=torch.float64))) * 4.0
    assert round(one_d, 4) == hull1d
    v, _ = H.concave_envelope(kind, np.array([4.0, 4.0]), -4.0, np.array([1.0, 0.0]))
    assert v == pytest.approx(hull, abs=1e-12)


def _random_case(rng, n):
    w = rng.normal(size=n) * rng.uniform(0.5, 3)
    return w, float(rng.normal() * 2), (L := rng.uniform(-2, 0, n)), L + rng.uniform(0.2, 3, n)


def _check_envelopes_against_grid(n, G, cases, points, seed):
    rng = np.random.default_rng(seed)
    for kind in KINDS:
        for _ in range(cases):
            w, b, L, U = _random_case(rng, n)
            P = grid(L, U, G)
            fv = f(kind, P @ w + b)
            tol = resolution(kind, w, L, U, G)
            xs = [rng.uniform(L, U) for _ in range(points)] + [np.where(rng.random(n) < 0.5, L, U)]
            for x, side in itertools.product(xs, ("upper", "lower")):
                beta, alpha = (H.upper_cut if side == "upper" else H.lower_cut)(kind, w, b, L, U, x)
                env = alpha + beta @ x
                hull = sampled_hull(P, fv, x, side == "upper")
                sign = 1 if side == "upper" else -1
                assert sign * (env - hull) >= -1e-9, (kind, side, env, hull)        # never inside the hull
                assert sign * (env - hull) <= tol, (kind, side, env, hull, tol)     # as tight as the grid allows
                assert np.all(sign * (alpha + P @ beta - fv) >= 0), (kind, side)    # valid at every grid point
                assert H.cut_violation(kind, w, b, L, U, beta, alpha, side) <= 0    # and proven valid


def test_envelopes_match_the_sampled_hull_2d():
    _check_envelopes_against_grid(n=2, G=31, cases=2, points=2, seed=0)


@pytest.mark.slow
def test_envelopes_match_the_sampled_hull_3d():
    _check_envelopes_against_grid(n=2, G=51, cases=2, points=3, seed=1)
    _check_envelopes_against_grid(n=3, G=21, cases=4, points=3, seed=2)


def test_supergradients_need_only_rounding_repair():
    """The envelope's cut before its repair is already valid up to rounding (a wrong supergradient would need a
    large shift), and the exact check catches an alpha planted 1e-7 too tight."""
    rng = np.random.default_rng(3)
    for it in range(30):
        kind = KINDS[it % 3]
        n = int(rng.integers(1, 30))
        w = rng.normal(size=n) * rng.choice([0.1, 1.0, 5.0])
        b = float(rng.normal() * 3)
        L = rng.uniform(-3, 1, n)
        U = L + rng.uniform(0, 3, n) * (rng.random(n) < 0.9)  # some zero-width coordinates
        w[rng.random(n) < 0.1] = 0.0
        x = rng.uniform(L, U)
        for side in ("upper", "lower"):
            beta, alpha = (H.upper_cut if side == "upper" else H.lower_cut)(kind, w, b, L, U, x)
            sign = 1 if side == "upper" else -1
            scale = 1 + abs(alpha) + np.abs(beta) @ np.maximum(abs(L), abs(U))
            assert H.cut_violation(kind, w, b, L, U, beta, alpha, side) <= 0
            assert H.cut_violation(kind, w, b, L, U, beta, alpha - sign * 1e-7, side) >= 1e-7 - 1e-12 * scale
            a, c, t, live, neg, wl, xx = H.normalise(w, b, L, U, x)
            v, _ = (H.concave_envelope if side == "upper" else H.convex_envelope)(kind, a, c, t)
            assert abs(alpha + beta @ xx - v) <= 1e-12 * scale  # the repair only absorbed rounding
            X = rng.uniform(L, U, size=(500, n))
            assert np.all(sign * (alpha + X @ beta - f(kind, X @ w + b)) >= 0)


def test_cut_violation_bounds_the_sampled_violation_tightly():
    """For arbitrary cuts (not envelope cuts), the exact check is above the densely sampled violation and
    within the grid's Lipschitz resolution of it."""
    rng = np.random.default_rng(4)
    for it in range(6):
        kind = KINDS[it % 3]
        w, b, L, U = _random_case(rng, 2)
        beta, alpha = rng.normal(size=2) * 0.3, float(rng.normal())
        G = 201
        P = grid(L, U, G)
        fv = f(kind, P @ w + b)
        lip = (0.25 if kind == "sigmoid" else 1.0) * np.abs(w) + np.abs(beta)
        res = float(lip @ (U - L)) / (G - 1)
        for side, sign in (("upper", 1), ("lower", -1)):
            sampled = float(np.max(sign * (fv - alpha - P @ beta)))
            bound = H.cut_violation(kind, w, b, L, U, beta, alpha, side)
            assert sampled <= bound <= sampled + res, (kind, side, sampled, bound, res)


def test_degenerate_boxes_and_weights():
    kind = "sigmoid"
    # zero weights and zero-width coordinates: the cut ignores them and stays exact on the rest
    w, L, U = np.array([0.0, 2.0, 1.5]), np.array([-1.0, -1.0, 0.3]), np.array([1.0, 1.0, 0.3])
    beta, alpha = H.upper_cut(kind, w, 0.1, L, U, np.array([0.5, -1.0, 0.3]))
    assert beta[0] == 0 and beta[2] == 0
    assert alpha + beta @ np.array([0.0, -1.0, 0.3]) == pytest.approx(float(f(kind, -2.0 + 0.45 + 0.1)), abs=1e-12)
    # every weight zero: f is a constant, the cuts are flat at it
    for cut in (H.upper_cut, H.lower_cut):
        beta, alpha = cut(kind, np.zeros(2), -0.7, -np.ones(2), np.ones(2), np.zeros(2))
        assert np.all(beta == 0) and alpha == pytest.approx(float(f(kind, -0.7)), abs=1e-13)
    # the corner t = 0 and an empty problem
    v, g = H.concave_envelope(kind, np.array([1.0, 2.0]), -3.0, np.zeros(2))
    assert v == pytest.approx(float(f(kind, -3.0)), abs=1e-15) and g.shape == (2,)
    v, g = H.concave_envelope(kind, np.zeros(0), 0.4, np.zeros(0))
    assert v == pytest.approx(float(f(kind, 0.4))) and g.shape == (0,)
    # non-finite input: no proof
    assert H.cut_violation(kind, w, np.nan, L, U, np.zeros(3), 1.0, "upper") == np.inf
