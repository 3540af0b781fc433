"""The contract of every layer class of :mod:`relaxations.layers`, checked on a small random instance of each.

The layer classes are found from the package's exports, and a class without a test instance fails here, so a
new layer cannot go unchecked. For every affine layer, in float64 and float32: ``forward`` agrees with its dense
map (``x @ W.T + b``, :func:`relaxations.layers.dense_map`), and so do ``linear`` / ``offset`` / ``abs_linear`` /
``magnitude``; ``interval(l, u)`` contains the layer's value at points of the box (corners and interior), for
the real (float64) parameters; ``backward(A) = (A', c)`` gives ``A . layer(x) = A' . x + c`` up to the rounding
its weights ``err_weight`` bound. For the float32 copy of a float64 layer (parameters rounded, ``rep_err``
set): ``fp_err``, ``reach_out`` and ``err_weight`` bound the gap between its float32 evaluation and the float64
one of the original parameters. For every activation: its relaxation encloses it on the box in exact
(rational) arithmetic, for the default slopes and for any projected ``alpha``, and the parameter life cycle
(``initial_alpha`` with warm starts, ``project_``, ``optimisable``, ``select``, ``out_reach``) keeps its word.
"""
from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch

import relaxations.layers as layers_pkg
from relaxations.fp import dot_abs, reach
from relaxations.layers import (
    Activation,
    Conv2d,
    ConvTranspose2d,
    ElementwiseAffine,
    Gather,
    Layer,
    LeakyReLU,
    Linear,
    MatMul,
    ReLU,
    Reshape,
    SmoothActivation,
    Stage,
    dense_map,
)

pytestmark = pytest.mark.fast

F64, F32 = torch.float64, torch.float32
ABSTRACT = {Layer, Activation}  # interfaces: no instances of their own
SLACK = 1e-12  # relative error allowed to the float64 reference evaluations (their rounding is ~1e-16)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=F64)


# every layer class: factories of small random float64 instances (a generator in, a layer out)
INSTANCES = {
    Linear: [lambda g: Linear(_randn(g, 5, 4), _randn(g, 5))],
    Conv2d: [lambda g: Conv2d(_randn(g, 4, 2, 3, 3), _randn(g, 4), (2, 5, 6), stride=(2, 1), padding=(1, 0),
                              dilation=(1, 2)),
             lambda g: Conv2d(_randn(g, 4, 1, 2, 2), None, (2, 4, 4), groups=2)],
    ConvTranspose2d: [lambda g: ConvTranspose2d(_randn(g, 2, 3, 2, 2), _randn(g, 3), (2, 3, 3), stride=(2, 2),
                                                padding=(1, 0), output_padding=(1, 0))],
    ElementwiseAffine: [lambda g: ElementwiseAffine(_randn(g, 2, 3), _randn(g, 2, 3))],
    Reshape: [lambda g: Reshape((2, 3), (6,))],
    Gather: [lambda g: Gather((6,), (8,), [0, 5, 5, -1, 2, 3, 0, 1])],  # repeats and a zero entry
    MatMul: [lambda g: MatMul(_randn(g, 4, 3), (2, 4), side="right"),
             lambda g: MatMul(_randn(g, 3, 2), (2, 5), side="left")],
    Stage: [lambda g: Stage([4, 6], [5, 6, 3], [
        (0, 0, Linear(_randn(g, 5, 4), _randn(g, 5))),
        (0, 1, Gather((6,), (5,), [0, 2, 2, -1, 5])),           # a residual sum with an index map
        (1, 1, ElementwiseAffine(_randn(g, 6), _randn(g, 6))),
        (1, 0, MatMul(_randn(g, 2, 3), (2, 2))),                # fan-out: slot 0 read twice
        (2, None, Linear(_randn(g, 3, 10), _randn(g, 3))),      # a term on the whole state
    ])],
    ReLU: [lambda g: ReLU((7,)), lambda g: ReLU((2, 3))],
    SmoothActivation: [lambda g: SmoothActivation((7,), "sigmoid"), lambda g: SmoothActivation((2, 3), "tanh"),
                       lambda g: SmoothActivation((7,), "softplus"),
                       lambda g: SmoothActivation((6,), "tanh", mask=[True, False] * 3)],
    LeakyReLU: [lambda g: LeakyReLU((7,), 0.1), lambda g: LeakyReLU((2, 3), 0.0, mask=[True, False] * 3)],
}


def _exported_layer_classes():
    out = set()
    for name in layers_pkg.__all__:
        obj = getattr(layers_pkg, name)
        if isinstance(obj, type) and issubclass(obj, Layer):
            out.add(obj)
    return out


def _all_subclasses(cls):
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


CONCRETE = sorted(_exported_layer_classes() - ABSTRACT, key=lambda c: c.__name__)


def _cases(affine):
    """``(class, factory)`` pairs; a class without factories gives one ``(class, None)`` case, which fails."""
    out = []
    for cls in CONCRETE:
        if cls.affine != affine:
            continue
        makes = INSTANCES.get(cls) or [None]
        out += [pytest.param(cls, make, id=f"{cls.__name__}{k}") for k, make in enumerate(makes)]
    return out


AFFINE, ACTIVATIONS = _cases(True), _cases(False)


def test_every_layer_class_is_exported_and_has_a_test_instance():
    defined = {c for c in _all_subclasses(Layer) if c.__module__.startswith("relaxations.layers")}
    exported = _exported_layer_classes()
    assert not defined - exported, f"layer classes not exported by relaxations.layers: {defined - exported}"
    missing = [c.__name__ for c in exported - ABSTRACT if not INSTANCES.get(c)]
    assert not missing, f"layer classes without a test instance in INSTANCES: {missing}"
    for c in exported - ABSTRACT:
        assert issubclass(c, Activation) != c.affine, f"{c.__name__}: an activation is exactly a non-affine layer"


def _instance(cls, make, dtype, seed=0):
    """``(layer, real)``: the instance in ``dtype`` (float32: the float64 one rounded, ``rep_err`` set) and the
    float64 original, whose parameters count as the real ones."""
    assert make is not None, f"{cls.__name__} has no test instance: add one to INSTANCES"
    real = make(_gen(seed))
    assert type(real) is cls
    return (real if dtype == F64 else copy.deepcopy(real).to(dtype=dtype)), real


def _boxes(shape, dtype, n=3, seed=1, centre=2.0, origin=False):
    """``n`` random boxes ``(n, *shape)`` around centres of scale ``centre``; with ``origin`` one more, a small box
    around 0, where the constants of a layer dominate its rounding."""
    g = _gen(seed)
    c = (_randn(g, n, *shape) * centre).to(dtype)
    r = (torch.rand(n, *shape, generator=g, dtype=F64) * 1.5).to(dtype)
    if origin:
        c, r = torch.cat([c, torch.zeros_like(c[:1])]), torch.cat([r, torch.full_like(r[:1], 1e-3)])
    return c - r, c + r


def _samples(l, u, per_box=16, seed=2):
    """Points of the boxes ``(n, *s)``: ``per_box`` each (half of them corners), as ``(x, l, u)`` with the box
    repeated per point, all ``(n per_box, *s)``."""
    g = _gen(seed)
    L, U = l.repeat_interleave(per_box, 0), u.repeat_interleave(per_box, 0)
    t = torch.rand(L.shape, generator=g, dtype=F64).to(l.dtype)
    corner = torch.rand(L.shape, generator=g) < 0.5
    first = (torch.arange(L.shape[0]) % per_box < per_box // 2).reshape(-1, *[1] * (L.dim() - 1))
    x = torch.where(first, torch.where(corner, U, L), L + t * (U - L))
    return torch.minimum(torch.maximum(x, L), U), L, U


def _flat(t):
    return t.double().reshape(t.shape[0], -1)


# ----------------------------------------------------------------------------------------------- affine layers
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls,make", AFFINE)
def test_forward_agrees_with_the_dense_map(cls, make, dtype):
    layer, _ = _instance(cls, make, dtype)
    x, _, _ = _samples(*_boxes(layer.in_shape, dtype))
    N = x.shape[0]
    W, b = dense_map(layer)  # float64 values of the layer's own parameters
    assert W.shape == (layer.out_size, layer.in_size) and b.shape == (layer.out_size,)
    xf, ax = _flat(x), _flat(x).abs()
    exact = xf @ W.T + b
    mag = ax @ W.abs().T + b.abs()
    tol = _flat(layer.fp_err(x.abs())) + SLACK * mag
    y = layer.forward(x)
    assert y.shape == (N, *layer.out_shape) and y.dtype == dtype
    assert bool(((_flat(y) - exact).abs() <= tol).all())
    lin = layer.linear(x) + layer.offset()
    assert bool(((_flat(torch.broadcast_to(lin, y.shape)) - exact).abs() <= tol).all())
    assert bool(((_flat(layer.abs_linear(x.abs())) - ax @ W.abs().T).abs() <= tol).all())
    assert bool(((_flat(layer.magnitude(x.abs())) - mag).abs() <= tol).all())


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls,make", AFFINE + ACTIVATIONS)
def test_interval_contains_the_values_at_points_of_the_box(cls, make, dtype):
    layer, real = _instance(cls, make, dtype)
    l, u = _boxes(layer.in_shape, dtype)
    lo, hi = layer.interval(l, u)
    assert lo.shape == hi.shape == (l.shape[0], *layer.out_shape)
    x, _, _ = _samples(l, u)
    per = x.shape[0] // l.shape[0]
    y = _flat(real.forward(x.double()))
    slack = SLACK * _flat(real.magnitude(x.double().abs())) if real.affine else 0.0
    assert bool((_flat(lo.repeat_interleave(per, 0)) <= y + slack).all())
    assert bool((y - slack <= _flat(hi.repeat_interleave(per, 0))).all())


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls,make", AFFINE)
def test_backward_substitutes_the_layer(cls, make, dtype):
    """``A . layer(x) = A' . x + c`` for the layer's own parameters, up to the rounding of ``backward``, which
    ``err_weight(r)`` bounds (``<|A|, w> + under`` for ``|x| <= r``)."""
    layer, _ = _instance(cls, make, dtype)
    x, L, U = _samples(*_boxes(layer.in_shape, dtype))
    N, m = x.shape[0], 3
    A = _randn(_gen(3), N, m, *layer.out_shape).to(dtype)
    Ab, c = layer.backward(A)
    assert Ab.shape == (N, m, *layer.in_shape) and Ab.dtype == dtype
    assert c is None or (c.shape == (N, m) and c.dtype == dtype)
    own = copy.deepcopy(layer).to(dtype=F64)  # the same parameter values, exactly
    xd = x.double()
    lhs = (A.double().reshape(N, m, -1) * _flat(own.forward(xd))[:, None]).sum(-1)
    rhs = (Ab.double().reshape(N, m, -1) * _flat(xd)[:, None]).sum(-1) + (0.0 if c is None else c.double())
    w, under = layer.err_weight(reach(L, U))
    bound = 0.0 if w is None else dot_abs(A.double(), w.double()) + under.double()
    slack = SLACK * (dot_abs(A.double(), own.magnitude(xd.abs())) + dot_abs(Ab.double(), xd.abs()))
    assert bool(((lhs - rhs).abs() <= bound + slack).all())


@pytest.mark.parametrize("cls,make", AFFINE)
def test_rounding_weights_bound_float32_against_float64(cls, make):
    """The float32 copy of a float64 layer (parameters rounded: ``rep_err``): its forward values, its reach and its
    back-substitution stay within ``fp_err``, ``reach_out`` and ``err_weight`` of the float64 (real) layer's."""
    layer, real = _instance(cls, make, F32)
    x, L, U = _samples(*_boxes(layer.in_shape, F32, centre=20.0, origin=True))
    r = reach(L, U)
    N, m = x.shape[0], 3
    xd = x.double()
    y_real = _flat(real.forward(xd))
    mag = _flat(real.magnitude(xd.abs()))
    assert bool(((_flat(layer.forward(x)) - y_real).abs() <= _flat(layer.fp_err(r)) + SLACK * mag).all())
    assert bool((y_real.abs() <= _flat(layer.reach_out(r)) + SLACK * mag).all())
    A = _randn(_gen(4), N, m, *layer.out_shape).to(F32)
    Ab, c = layer.backward(A)
    lhs = (A.double().reshape(N, m, -1) * y_real[:, None]).sum(-1)
    rhs = (Ab.double().reshape(N, m, -1) * _flat(xd)[:, None]).sum(-1) + (0.0 if c is None else c.double())
    w, under = layer.err_weight(r)
    bound = 0.0 if w is None else dot_abs(A.double(), w.double()) + under.double()
    scale = dot_abs(A.double(), mag) + dot_abs(Ab.double(), xd.abs())
    assert bool(((lhs - rhs).abs() <= bound + SLACK * scale).all())
    assert bool((torch.as_tensor(bound) <= 1e-4 * scale + 1e-30).all())  # and the bound is not vacuous


# ------------------------------------------------------------------------------------------------- activations
def _exact_leq(a, b):
    """Elementwise ``a <= b`` for lists of Fractions."""
    return all(p <= q for p, q in zip(a, b))


def _fractions(t):
    return [Fraction(float(v)) for v in t.reshape(-1).tolist()]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls,make", ACTIVATIONS)
def test_activation_relaxation_encloses_it_in_exact_arithmetic(cls, make, dtype):
    layer, _ = _instance(cls, make, dtype)
    l, u = _boxes(layer.in_shape, dtype, n=4, centre=0.7)  # most neurons unstable
    n_box = l.shape[0]
    rel = layer.relaxation(l.reshape(n_box, -1), u.reshape(n_box, -1))
    x, _, _ = _samples(l, u, per_box=8)
    per = x.shape[0] // n_box
    mine = rel.select(torch.arange(n_box).repeat_interleave(per))  # each point with its box's relaxation
    xf, fx = x.reshape(x.shape[0], -1), layer.forward(x).reshape(x.shape[0], -1)
    if getattr(rel, "general_lines", False):
        return _general_lines_enclose(layer, rel, mine, xf, n_box, per, dtype)
    X, F = _fractions(xf), _fractions(fx)
    if isinstance(layer, LeakyReLU):  # the real max(x, a x), not its rounded float value
        a, mask = Fraction(layer.alpha), getattr(layer, "mask", None)
        n = xf.shape[1]
        F = [max(z, a * z) if mask is None or mask[i % n] else z for i, z in enumerate(X)]
    low_int = [Fraction(0)] * len(X) if mine.low_int is None else _fractions(mine.low_int)
    low = [a * z + b for a, z, b in zip(_fractions(mine.lower_slope()[:, 0]), X, low_int)]
    up = [a * z + b for a, z, b in zip(_fractions(mine.up_slope), X, _fractions(mine.up_int))]
    assert _exact_leq(low, F) and _exact_leq(F, up)
    # any alpha, once projected, gives a valid lower bound; it replaces the default only where optimisable
    alpha = rel.project_(_randn(_gen(5), n_box, 2, rel.l.shape[1]).to(dtype) * 2)
    slopes = rel.lower_slope(alpha)
    assert slopes.shape == alpha.shape
    fixed = ~rel.optimisable[:, None].expand_as(alpha)
    assert torch.equal(slopes[fixed], rel.lower_slope().expand_as(alpha)[fixed])
    mine_slopes = slopes.repeat_interleave(per, 0)
    for row in range(2):
        low = [a * z + b for a, z, b in zip(_fractions(mine_slopes[:, row]), X, low_int)]
        assert _exact_leq(low, F)
    assert bool((fx.abs() <= mine.out_reach()).all())


def _real_values(layer, xf):
    """The real activation at the float points ``xf`` ``(P, n)``, as mpmath numbers at 60 digits (identity off the
    layer's mask): for the transcendental activations, where the float ``forward`` is only an approximation."""
    import mpmath
    mp = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
    mp.dps = 60
    fn = {"sigmoid": lambda z: 1 / (1 + mp.exp(-z)), "tanh": mp.tanh, "softplus": lambda z: mp.log1p(mp.exp(z))}
    mask = getattr(layer, "mask", None)
    out = []
    for row in xf.tolist():
        vals = []
        for i, v in enumerate(row):
            z = mp.mpf(v)
            on = mask is None or bool(mask[i])
            vals.append(fn[layer.kind](z) if on else z)
        out.append(vals)
    return out


def _general_lines_enclose(layer, rel, mine, xf, n_box, per, dtype):
    """Lines with both intercepts (:meth:`lines`): the default ones and those of any projected alpha enclose the
    real activation at the sample points (mpmath at 60 digits against the exact value of each line)."""
    import mpmath
    F = _real_values(layer, xf)

    def check(ls, li, us, ui):
        for p, (frow, zrow) in enumerate(zip(F, xf.tolist())):
            for i, (f, z) in enumerate(zip(frow, zrow)):
                lo = Fraction(float(ls[p, i])) * Fraction(z) + Fraction(float(li[p, i]))
                hi = Fraction(float(us[p, i])) * Fraction(z) + Fraction(float(ui[p, i]))
                assert mpmath.mpf(lo.numerator) / lo.denominator <= f <= mpmath.mpf(hi.numerator) / hi.denominator, \
                    (p, i, z, float(lo), float(f), float(hi))

    ls, li, us, ui = (t[:, 0] for t in mine.lines())
    check(ls, li, us, ui)
    alpha = rel.initial_alpha(2)
    alpha = rel.project_(alpha + 3 * _randn(_gen(5), *alpha.shape).to(dtype))
    lines = rel.lines(alpha)
    assert all(t.shape == (n_box, 2, rel.l.shape[1]) for t in lines)
    for row in range(2):
        check(*(t[:, row].repeat_interleave(per, 0) for t in lines))
    fx = layer.forward(xf.reshape(xf.shape[0], *layer.in_shape)).reshape(xf.shape[0], -1)
    assert bool((fx.abs() <= mine.out_reach()).all())


@pytest.mark.parametrize("cls,make", ACTIVATIONS)
def test_activation_parameter_life_cycle(cls, make):
    layer, _ = _instance(cls, make, F64)
    l, u = _boxes(layer.in_shape, F64, n=3, centre=0.7)
    rel = layer.relaxation(l.reshape(3, -1), u.reshape(3, -1))
    n = rel.l.shape[1]
    if getattr(rel, "general_lines", False):
        return _general_life_cycle(layer, rel, l, u)
    assert rel.optimisable.shape == (3, n) and rel.optimisable.dtype == torch.bool
    fresh = rel.initial_alpha(4)
    assert fresh.shape == (3, 4, n) and torch.equal(fresh, rel.lower_slope().expand(3, 4, n))
    assert torch.equal(rel.project_(fresh.clone()), fresh)  # the defaults are valid parameters
    warm = rel.project_(_randn(_gen(6), 3, 4, n))
    again = rel.initial_alpha(4, warm)
    assert torch.equal(again, warm) and again.data_ptr() != warm.data_ptr()
    assert torch.equal(rel.initial_alpha(5, warm), rel.lower_slope().expand(3, 5, n))  # a misfit is not used
    part = rel.select(torch.tensor([2, 0]))
    whole = layer.relaxation(l.reshape(3, -1)[[2, 0]], u.reshape(3, -1)[[2, 0]])
    for name in ("l", "u", "up_slope", "up_int", "infeasible"):
        assert torch.equal(getattr(part, name), getattr(whole, name)), name
    assert torch.equal(part.lower_slope(), whole.lower_slope())


def _general_life_cycle(layer, rel, l, u):
    """The parameter life cycle of a relaxation with general lines (parameters of any per-neuron shape)."""
    n = rel.l.shape[1]
    assert rel.optimisable.shape == (3, n) and rel.optimisable.dtype == torch.bool
    fresh = rel.initial_alpha(4)
    assert fresh.shape[:2] == (3, 4) and fresh.shape[-1] == n
    assert torch.equal(rel.project_(fresh.clone()), fresh)  # the defaults are valid parameters
    for got, want in zip(rel.lines(fresh), rel.lines()):     # and give the default lines (up to rounding)
        assert torch.allclose(got, want.expand_as(got), rtol=1e-9, atol=1e-12)
    warm = rel.project_(fresh + _randn(_gen(6), *fresh.shape))
    again = rel.initial_alpha(4, warm)
    assert torch.equal(again, warm) and again.data_ptr() != warm.data_ptr()
    assert torch.equal(rel.initial_alpha(5, warm), rel.initial_alpha(5))  # a misfit is not used
    rel.lines(warm)  # (fills any per-relaxation cache before the selection)
    part = rel.select(torch.tensor([2, 0]))
    whole = layer.relaxation(l.reshape(3, -1)[[2, 0]], u.reshape(3, -1)[[2, 0]])
    for got, want in zip(part.lines(warm[[2, 0]]), whole.lines(warm[[2, 0]])):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)
    for name in ("l", "u", "infeasible"):
        assert torch.equal(getattr(part, name), getattr(whole, name)), name
    for name in ("up_slope", "up_int", "low_slope", "low_int"):  # (vectorised libm values depend on the batch)
        assert torch.allclose(getattr(part, name), getattr(whole, name), rtol=1e-12, atol=1e-15), name
