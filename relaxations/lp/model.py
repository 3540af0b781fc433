"""The triangle LP of a whole network as one reusable cvxpy model, extendable by cuts.

Variables (one flat vector ``v``): the input ``x`` (``n_0``), then per ReLU layer ``i`` its
pre-activation ``z_i`` and post-activation ``y_i`` (``n_i`` each); optional extended variables ``w``
(disjunctive formulations) follow. Constraints:

- ``z_i = W_i y_{i-1} + b_i`` (``y_{-1} = x``; equality blocks from :func:`affine_blocks`);
- ``z_i - y_i <= 0`` (``y >= z``), and ``y >= 0`` through the box of ``y``;
- ``y_i <= s_i * z_i + t_i`` (the chord for unstable neurons, ``s = 1, t = 0`` for active ones and
  ``s = t = 0`` for inactive ones, which makes stable neurons exact);
- the box: input box, ``z_i`` in ``[l_i, u_i]``, ``y_i`` in ``[relu(l_i), relu(u_i)]``;
- cuts added by multi-neuron methods: ``A [v; w] <= b`` / ``E [v; w] == e``, each tagged by the ReLU
  layer it belongs to.

The box, ``s`` and ``t`` and the objective are ``cp.Parameter``s: :meth:`NetworkLP.set_domain` only
changes parameter values, so many domains reuse one compiled problem. Every value returned by
:meth:`NetworkLP.minimize` is the dual certificate of :mod:`relaxations.lp.sound`, never the printed
optimum. The chord's intercept is rounded outward so that the float constraint contains the ReLU graph.
"""
from __future__ import annotations

import time

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from relaxations.lp.encoding import DomainBounds, affine_blocks, domain_bounds, layer_offsets, relu_sizes
from relaxations.lp.quiet import silence_highs_banner
from relaxations.lp.sound import EPS, certified_min


def safe_chord(l, u):
    """Slope ``s`` and intercept ``t`` of ``y <= s z + t`` valid (in exact arithmetic, for the float
    numbers returned) for ``relu`` on ``[l, u]``, ``l < 0 < u``; ``(n,)`` each."""
    s = u / (u - l)
    t = np.maximum(-s * l, u - s * u)
    t = t + 8 * EPS * (np.abs(s * l) + np.abs(u) + np.abs(s * u)) + np.finfo(np.float64).tiny
    return s, t


class NetworkLP:
    """See the module docstring. ``solver``: a cvxpy solver name ("HIGHS", "CLARABEL", "SCS", ...)."""

    def __init__(self, net, solver="HIGHS", solver_opts=None):
        self.net = net
        self.solver = solver
        # cvxpy's HiGHS warm start makes re-solves ~20x slower (measured): off unless asked for
        self.solver_opts = ({"warm_start": False} if str(solver).upper() == "HIGHS" else {}) | dict(solver_opts or {})
        silence_highs_banner()
        t0 = time.perf_counter()
        self.blocks = affine_blocks(net)
        self.sizes = relu_sizes(net)
        self.n_in = net.in_size
        self.z_off, self.y_off, self.n = layer_offsets(self.n_in, self.sizes)
        self.n_layers = len(self.sizes)
        self.v = cp.Variable(self.n)
        self.Lp = cp.Parameter(self.n)
        self.Up = cp.Parameter(self.n)
        self.s = [cp.Parameter(n) for n in self.sizes]
        self.t = [cp.Parameter(n) for n in self.sizes]
        self.eq_mats, self.low_mats = [], []
        for i, n in enumerate(self.sizes):
            blk = self.blocks[i]
            prev = slice(0, self.n_in) if i == 0 else self.post_slice(i - 1)
            E = sp.hstack([sp.csr_matrix((n, prev.start)), -blk.W,
                           sp.csr_matrix((n, self.z_off[i] - prev.stop)), sp.identity(n),
                           sp.csr_matrix((n, self.n - self.z_off[i] - n))]).tocsr()
            self.eq_mats.append((E, blk.b))
            A = sp.hstack([sp.csr_matrix((n, self.z_off[i])), sp.identity(n), -sp.identity(n),
                           sp.csr_matrix((n, self.n - self.y_off[i] - n))]).tocsr()
            self.low_mats.append(A)
        # extended variables and cuts
        self.w_lower, self.w_upper = np.zeros(0), np.zeros(0)
        self.cuts = []  # (layer, A (m, n + n_w) csr, b, is_eq)
        self._problems = {}
        self.dom = None
        self.build_time = time.perf_counter() - t0
        self.solve_times = []

    # ------------------------------------------------------------------ layout helpers
    def pre_slice(self, i):
        return slice(self.z_off[i], self.z_off[i] + self.sizes[i])

    def post_slice(self, i):
        """Slice of the output of ReLU layer ``i`` (``i = -1``: the input)."""
        if i < 0:
            return slice(0, self.n_in)
        return slice(self.y_off[i], self.y_off[i] + self.sizes[i])

    @property
    def n_total(self):
        return self.n + self.w_lower.size

    # ------------------------------------------------------------------ domain
    def set_domain(self, dom: DomainBounds):
        """Set box / chord parameters for one domain (no rebuild)."""
        self.dom = dom
        L, U = np.empty(self.n), np.empty(self.n)
        L[:self.n_in], U[:self.n_in] = dom.x_lower, dom.x_upper
        for i in range(self.n_layers):
            l, u = dom.pre[i]
            ph = dom.phases(i)
            if dom.empty:
                l, u = np.minimum(l, u), np.maximum(l, u)
            L[self.pre_slice(i)], U[self.pre_slice(i)] = l, u
            L[self.post_slice(i)], U[self.post_slice(i)] = np.maximum(l, 0), np.maximum(u, 0)
            s, t = np.zeros(l.size), np.zeros(l.size)
            s[ph == 1] = 1.0
            uns = ph == 0
            s[uns], t[uns] = safe_chord(l[uns], u[uns])
            yl, yu = L[self.post_slice(i)], U[self.post_slice(i)]
            yu[ph == -1] = 0.0
            yl[ph == 1] = np.maximum(l[ph == 1], 0)
            L[self.post_slice(i)], U[self.post_slice(i)] = yl, yu
            self.s[i].value, self.t[i].value = s, t
        self.Lp.value, self.Up.value = L, U
        self.L, self.U = L, U

    def set_box(self, lower, upper, pre_bounds=None, splits=None) -> DomainBounds:
        dom = domain_bounds(self.net, lower, upper, pre_bounds, splits)
        self.set_domain(dom)
        return dom

    # ------------------------------------------------------------------ cuts
    def add_variables(self, lower, upper) -> int:
        """Append extended variables with finite box ``[lower, upper]``; returns their offset in [v; w]."""
        off = self.n_total
        self.w_lower = np.concatenate([self.w_lower, np.asarray(lower, float)])
        self.w_upper = np.concatenate([self.w_upper, np.asarray(upper, float)])
        # earlier cut matrices must be widened
        self.cuts = [(k, sp.hstack([A, sp.csr_matrix((A.shape[0], self.n_total - A.shape[1]))]).tocsr(), b, e)
                     for k, A, b, e in self.cuts]
        self._problems = {}
        return off

    def add_cuts(self, layer, A, b, equality=False):
        """Add ``A [v; w] <= b`` (or ``==``), ``A``: ``(m, n_total)``, belonging to ReLU ``layer``."""
        A = sp.csr_matrix(A)
        if A.shape[1] != self.n_total:
            raise ValueError(f"cut matrix has {A.shape[1]} columns, model has {self.n_total} variables")
        if A.shape[0]:
            self.cuts.append((layer, A, np.asarray(b, float).reshape(-1), equality))
            self._problems = {}

    def reset_cuts(self):
        """Drop every cut and extended variable (cuts are domain-specific)."""
        self.w_lower, self.w_upper = np.zeros(0), np.zeros(0)
        self.cuts = []
        self._problems = {}

    def n_cuts(self):
        return sum(A.shape[0] for _, A, _, _ in self.cuts)

    # ------------------------------------------------------------------ problems
    def _problem(self, depth):
        """The LP with ReLU layers ``< depth`` (and their cuts); built once, cached."""
        if depth in self._problems:
            return self._problems[depth]
        nw = self.w_lower.size
        w = cp.Variable(nw) if nw else None
        vw = cp.hstack([self.v, w]) if nw else self.v
        c = cp.Parameter(self.n_total)
        cons = [self.v >= self.Lp, self.v <= self.Up]
        if nw:
            cons += [w >= self.w_lower, w <= self.w_upper]
        handles = []
        for i in range(min(depth, self.n_layers)):
            E, e = self.eq_mats[i]
            ce = E @ self.v == e
            cl = self.low_mats[i] @ self.v <= 0
            cu = self.v[self.post_slice(i)] - cp.multiply(self.s[i], self.v[self.pre_slice(i)]) <= self.t[i]
            cons += [ce, cl, cu]
            handles.append(("eq", i, ce))
            handles.append(("low", i, cl))
            handles.append(("up", i, cu))
        for k, (layer, A, b, is_eq) in enumerate(self.cuts):
            if layer < depth:
                cc = (A @ vw == b) if is_eq else (A @ vw <= b)
                cons.append(cc)
                handles.append(("cut", k, cc))
        prob = cp.Problem(cp.Minimize(c @ vw), cons)
        self._problems[depth] = (prob, c, handles, vw)
        return self._problems[depth]

    def _certificate_blocks(self, handles, use_duals):
        nt = self.n_total
        ineqs, eqs = [], []
        widen = lambda A: sp.hstack([A, sp.csr_matrix((A.shape[0], nt - A.shape[1]))]).tocsr() \
            if A.shape[1] < nt else A
        for kind, i, con in handles:
            lam = con.dual_value if use_duals else None
            if kind == "eq":
                E, e = self.eq_mats[i]
                eqs.append((widen(E), e, lam))
            elif kind == "low":
                ineqs.append((widen(self.low_mats[i]), np.zeros(self.sizes[i]), lam))
            elif kind == "up":
                n = self.sizes[i]
                A = sp.hstack([sp.csr_matrix((n, self.z_off[i])), sp.diags(-self.s[i].value),
                               sp.identity(n), sp.csr_matrix((n, nt - self.y_off[i] - n))]).tocsr()
                ineqs.append((A, self.t[i].value, lam))
            else:
                _, A, b, is_eq = self.cuts[i]
                (eqs if is_eq else ineqs).append((A, b, lam))
        return ineqs, eqs

    def minimize(self, c, c0=0.0, depth=None, fallback=-np.inf):
        """Certified lower bound of ``min c^T [v; w] + c0`` over the LP of ReLU layers ``< depth``.

        ``c``: ``(n_total,)``. Returns ``(bound, status)``; ``bound`` is ``+inf`` for an empty domain.
        """
        if self.dom is None:
            raise RuntimeError("call set_domain/set_box first")
        if self.dom.empty:
            return np.inf, "empty"
        depth = self.n_layers if depth is None else depth
        prob, cpar, handles, _ = self._problem(depth)
        cpar.value = np.asarray(c, dtype=np.float64)
        t0 = time.perf_counter()
        try:
            prob.solve(solver=self.solver, **self.solver_opts)
            status = prob.status
        except cp.error.SolverError as exc:  # numerical failure: fall back to the box certificate
            status = f"solver_error: {exc}"
        self.solve_times.append(time.perf_counter() - t0)
        use = status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
        ineqs, eqs = self._certificate_blocks(handles, use)
        L = np.concatenate([self.L, self.w_lower])
        U = np.concatenate([self.U, self.w_upper])
        bound = certified_min(c, c0, ineqs, eqs, L, U, fallback)
        return bound, status

    def primal(self, depth=None):
        """The last solve's primal point ``[v; w]`` (for separation; not a certificate)."""
        depth = self.n_layers if depth is None else depth
        return np.asarray(self._problem(depth)[3].value, dtype=np.float64)

    # ------------------------------------------------------------------ objectives
    def output_objective(self, row):
        """``(c, c0)`` over ``[v; w]`` for ``row . net(x)``, ``row``: ``(out_size,)``."""
        blk = self.blocks[-1]
        c = np.zeros(self.n_total)
        c[self.post_slice(self.n_layers - 1)] = blk.W.T @ row
        return c, float(row @ blk.b)

    def pre_objective(self, i, row):
        """``(c, c0)`` for ``row . z_i`` written through ``y_{i-1}`` (usable at depth ``i``)."""
        blk = self.blocks[i]
        c = np.zeros(self.n_total)
        c[self.post_slice(i - 1)] = blk.W.T @ row
        return c, float(row @ blk.b)

    def output_bounds(self, C, fallback_lb=None, fallback_ub=None):
        """Certified ``(lb, ub)``, ``(m,)`` each, of the rows of ``C @ net(x)``."""
        C = np.atleast_2d(np.asarray(C, dtype=np.float64))
        m = C.shape[0]
        lb, ub = np.empty(m), np.empty(m)
        for r in range(m):
            c, c0 = self.output_objective(C[r])
            flb = -np.inf if fallback_lb is None else fallback_lb[r]
            fub = np.inf if fallback_ub is None else fallback_ub[r]
            lb[r], _ = self.minimize(c, c0, fallback=flb)
            neg, _ = self.minimize(-c, -c0, fallback=-fub)
            ub[r] = -neg
        return lb, ub
