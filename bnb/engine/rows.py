"""The output rows of one box: all its polytopes ``C y <= d`` as one row matrix, and what the engine asks of
them: refutation values of bounds (> 0 refutes), scores of domains, margins of concrete points.
"""
from __future__ import annotations

import torch

from bnb.engine.attack import stack_polytopes
from relaxations.fp import down, finite_or_neg_inf, reach, threshold_up
from relaxations.ibp import ibp
from relaxations.polytope import group_index, mix_rows
from relaxations.verdict import proven


class Rows:
    """All output polytopes of one box as one row matrix: ``C`` ``(M, n_out)``, ``d`` ``(M,)``, and the
    polytope (group) of each row. A domain is verified when every group has a row with ``lb > d``.

    ``d`` is the file's right-hand side (widened by a float32 query's slack, ``Polytope.refute_d``) rounded up in
    the working dtype, so that ``C y > d`` proves the
    file's ``C y > d``. Coefficients that the dtype cannot hold exactly (rare: VNN-LIB rows are mostly +-1)
    need ``y_reach()``, called only then, which returns ``(n_out,)``, a rigorous bound on ``|y|`` over the box:
    ``d`` is then raised by ``|C_file - C| . y_reach()`` (float64, rounded up)."""

    def __init__(self, polys, n_out, dtype, device, y_reach=None):
        rows, rhs, groups = [], [], []
        for g, p in enumerate(polys):
            d = p.refute_d
            for i in range(len(d)):
                rows.append(torch.as_tensor(p.C[i], dtype=torch.float64))
                rhs.append(float(d[i]))
                groups.append(g)
        C64 = torch.stack(rows)
        d64 = torch.tensor(rhs, dtype=torch.float64)
        self.C = C64.to(dtype=dtype, device=device)
        dC = (C64 - self.C.double().cpu()).abs()
        if bool((dC > 0).any()):
            if y_reach is None:
                raise ValueError("output coefficients not representable in the working dtype need y_reach")
            slack = dC @ y_reach().double().cpu().reshape(-1)
            d64 = d64 + slack * (1 + 1e-12)
        self.y_reach = y_reach
        self.d = threshold_up(d64, dtype, device)
        self.groups = torch.tensor(groups, device=device)
        self.polys = list(polys)
        self.K = len(polys)
        self.Cg, self.dg = stack_polytopes(self.polys, n_out, dtype, device)
        self.index, self.valid = group_index(self.groups, self.K)

    def mixed(self, res, lower, upper, iters):
        """Per polytope, the best bound mixing its rows (:mod:`relaxations.polytope`): values ``(N, K)``
        (> 0 refutes), the input coefficients ``(N, K, n_in)`` of the polytope's best single row, and the
        mixing weights ``(N, K, R)`` behind each value (over the rows ``index``)."""
        value, best_row, weights = mix_rows(res.A_input, res.bias, self.d, lower, upper, self.index, self.valid,
                                            res.lb, iters)
        coef = torch.gather(res.A_input, 1, best_row[..., None].expand(-1, -1, res.A_input.shape[-1]))
        return value, coef, weights

    def group_max(self, vals):
        """``(N, K)``: per polytope, the largest of its rows' values ``vals`` ``(N, M)``."""
        out = torch.full((vals.shape[0], self.K), -float("inf"), dtype=vals.dtype, device=vals.device)
        return out.scatter_reduce(1, self.groups.expand_as(vals), vals, reduce="amax")

    def refutation(self, lb, units=None):
        """``(N, M)``: each row's ``lb - d`` rounded down; NaN and infinities become ``-inf``. With ``units``
        ``(U,)``: ``lb`` is ``(U, 1)``, unit ``u`` a bound of row ``units[u]``."""
        d = self.d if units is None else self.d[units][:, None]
        return finite_or_neg_inf(down(lb - d))

    def group_values(self, lb):
        """``(N, K)``: per polytope, the best row ``max_i (lb_i - d_i)``; > 0 means refuted."""
        return self.group_max(self.refutation(lb))

    def settled(self, lb, infeasible, margin, floor=None, units=None):
        """``(N, M)``: rows whose polytope is refuted on their domain, by ``lb`` (or by ``floor``, a valid bound
        known before, e.g. the parent's) row by row, or because the domain is ``infeasible`` ``(N,)``: the
        optimiser of the bounds need not work on them any more. With ``units`` (see :meth:`refutation`):
        ``(U, 1)``, each unit settled when its own row is refuted."""
        if floor is not None:
            lb = torch.maximum(lb, floor)
        if units is not None:
            return proven(self.refutation(lb, units), margin, infeasible)
        return proven(self.group_values(lb), margin, infeasible)[:, self.groups]

    def score(self, lb):
        """Domain score ``(N,)`` (min over polytopes of the best row) and the deciding row ``(N,)``."""
        vals = self.refutation(lb)
        score, worst = self.group_max(vals).min(dim=1)
        row = vals.masked_fill(self.groups[None] != worst[:, None], -float("inf")).argmax(dim=1)
        return score, row, worst

    def group_margins(self, y):
        """Violation margin ``(N, K)`` of outputs ``y`` ``(N, n_out)`` per polytope: ``<= 0`` iff inside it."""
        return self.group_max(y @ self.C.T - self.d)

    def margins(self, y):
        """Violation margin ``(N,)`` of outputs ``y`` ``(N, n_out)``: ``<= 0`` iff ``y`` is in some polytope."""
        return self.group_margins(y).min(dim=1).values

    def restrict(self, keep_groups: torch.Tensor) -> "Rows":
        """Only the polytopes in the boolean mask ``keep_groups`` ``(K,)``."""
        polys = [p for p, k in zip(self.polys, keep_groups.tolist()) if k]
        return Rows(polys, self.C.shape[1], self.C.dtype, self.C.device, self.y_reach)


def output_reach(net, lower, upper):
    """``(n_out,)``: a rigorous bound on ``|y|`` over the box (IBP)."""
    lb, ub, _ = ibp(net, lower[None], upper[None])
    return reach(lb, ub)[0]


def polytope_values(rows, res, lower, upper, mix_iters, weights=False):
    """Per domain and polytope, the refutation value ``(N, K)`` (> 0: refuted) and the input coefficients
    ``(N, K, n_in)`` of the bound behind it (None without linear bounds, e.g. IBP or the LP methods); with
    ``weights``, also the rows' mixing weights ``(N, K, R)`` behind each value (None without linear bounds)."""
    if res.A_input is None or res.bias is None:
        return (rows.group_values(res.lb), None) + ((None,) if weights else ())
    value, coef, lam = rows.mixed(res, lower, upper, mix_iters)
    return (value, coef, lam) if weights else (value, coef)
