"""Clauses from verified subtrees (``bab.clauses``, after BICCOS, NeurIPS 2024): nogoods learned while ReLU
splitting, used to drop domains and to fix neurons before branching.

A *literal* ``(j, s)`` is a ReLU neuron ``j`` (flat index over the concatenated ReLU layers) in phase ``s``:
``s = +1`` says ``z_j >= 0``, ``s = -1`` says ``z_j <= 0`` (``z_j`` its pre-activation). A *clause* is a set of
literals, held as one row of a dense sign matrix ``(K, n)`` int8 (0 where the neuron is not in it); its region is
``R = box ∩ {s z_j >= 0 for every literal (j, s)}``. The clause says "not all of these at once": R holds no
counterexample.

**Learning.** A ReLU-split child that its bound verified gives the split literals of its domain. Those never
recur in a tree, so they are *strengthened* (:func:`strengthen`): each literal gets an influence, an estimate of
what dropping its split costs the child's bound (its split multiplier times how far the neuron reaches past the
phase, plus, where the bound used the neuron's upper line, that line's intercept times the coefficient), and the
least influential literals are dropped while their summed influence stays below the child's verified margin.
The estimate is only a choice of candidate: each candidate is *re-verified* (:func:`reverify`), bounded as a
domain of its own over the whole box, with only the kept literals split, intermediate bounds the root's with the
kept literals' clamps applied (valid on the whole box, hence on R), beta-CROWN (with the root's multi-neuron
constraints where the run has them) warm-started from the child's slopes and multipliers, every row. A candidate
is kept only when that bound proves every polytope refuted through :func:`relaxations.verdict.proven` (or rigorous
infeasibility); :func:`admit` is the only way into the store, and the child's own bound is never reused (the
child is smaller than R). Kept clauses subsume: a clause whose literals include all of another's says less and
is dropped; at most ``cap`` clauses are kept (the shortest first). Learning is batched (one bound for up to
``bab.clause_reverify`` candidates, the shortest first) and runs only while the clauses' time stays within
``bab.clause_share`` of the search's.

**Use**, on every popped batch before branching (:meth:`ClauseStore.apply`). A literal *holds* on a domain D
when its neuron is split in that phase, or D's intermediate bounds put it there (``l_j >= 0`` for ``+1``,
``u_j <= 0`` for ``-1``); these bounds are rigorous on D.

- Pruning: every literal of a kept clause holds on D, so D ⊆ R: D holds no counterexample and is dropped as
  verified (counted in ``domains_pruned_by_clause``, never as undecided).
- Unit propagation: all literals but one, ``(j, s)``, hold, and ``j`` is free and unstable on D. Then
  ``D = (D ∩ {s z_j >= 0}) ∪ (D ∩ {s z_j <= 0})`` and the first part lies in R, so D is replaced by the second:
  ``j`` split in phase ``-s`` (the boundary ``z_j = 0`` stays in the kept half), its bound clamped as a split
  clamps it. The domain's bounds stay valid (it only shrank). A neuron already in phase ``-s`` (split or
  stable) leaves the clause without effect.

Not built: the clauses as cutting planes inside the bound (BICCOS's other use, an indicator term with its own
multipliers in the back-substitution); here they only prune and propagate.
"""
from __future__ import annotations

import time

import torch

from bnb.engine.domains import ReluDomains
from relaxations.state import DomainState
from relaxations.verdict import proven

UNIT_ROUNDS = 4  # unit-propagation rounds per batch (a fixed neuron can make another clause unit)


def flat(per_layer: list) -> torch.Tensor:
    """Per ReLU layer tensors ``(N, n_i)`` concatenated: ``(N, n)``."""
    return torch.cat(list(per_layer), dim=1)


def literal_states(batch: ReluDomains):
    """``(pos, neg, open)``, each ``(N, n)`` bool: the literal ``+1`` holds (split active or ``l >= 0``), ``-1``
    holds (split inactive or ``u <= 0``), the neuron is free and unstable (split 0, ``l < 0 < u``). NaN bounds
    hold nothing and are not open."""
    s, l, u = flat(batch.splits), flat(batch.pre_lower), flat(batch.pre_upper)
    return (s > 0) | (l >= 0), (s < 0) | (u <= 0), (s == 0) & (l < 0) & (u > 0)


def subsumes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(Ka, Kb)`` bool: clause ``a[p]``'s literals are all among ``b[q]``'s (same phases), i.e. ``a[p]`` says
    more than ``b[q]`` (its region contains ``b[q]``'s)."""
    fa, fb = a.float(), b.float()
    return (fa @ fb.T) == (a != 0).sum(dim=1, dtype=torch.float32)[:, None]


def strengthen(splits: list, betas: list, coeffs: list, root_pre: list, slack: torch.Tensor,
               share: float = 1.0) -> torch.Tensor:
    """Candidate clauses ``(m, n)`` int8 of ``m`` verified domains: the split literals that their bounds need.

    Per ReLU layer ``splits`` ``(m, n_i)``; ``betas``, ``coeffs`` ``(m, M, n_i)``: split multipliers and the
    bound's coefficients on the layer's outputs, per row; ``root_pre``: the root's ``(l, u)`` ``(1, n_i)``;
    ``slack`` ``(m,)``: each domain's verified margin (its score, > 0). Dropping the split of neuron ``j``
    costs a row at most about its *influence*: ``beta_j`` times how far ``z_j`` reaches past the phase over the
    box (``-l_j`` for active, ``u_j`` for inactive), plus, where the coefficient ``c_j`` is negative (the bound
    used the neuron's upper line), ``-c_j`` times the triangle's intercept ``-l_j u_j / (u_j - l_j)``; with
    ``beta_j = 0`` and ``c_j >= 0`` nothing (the bound used only the neuron's lower line, exact for its phase,
    which the unsplit neuron's lower line of slope 1 (active) or 0 (inactive) reproduces on the whole box, see
    :func:`drop_slopes`). Literals are dropped, the least influential first, while their summed influence
    (the largest over rows) stays at most ``share`` times the slack. An estimate only: the re-verification
    decides. Rows whose coefficients were not computed (zero) count nothing."""
    s = flat(splits)
    l, u = flat([p[0] for p in root_pre]), flat([p[1] for p in root_pre])     # (1, n)
    reach = torch.where(s > 0, (-l).clamp(min=0), u.clamp(min=0))             # (m, n)
    gap = ((-l).clamp(min=0) * u.clamp(min=0) / (u - l).clamp(min=1e-30)).expand_as(reach)
    infl = flat2(betas).abs() * reach[:, None] + (-flat2(coeffs)).clamp(min=0) * gap[:, None]
    infl = torch.nan_to_num(infl, nan=float("inf"), posinf=float("inf")).amax(dim=1)      # (m, n)
    infl = torch.where(s != 0, infl, torch.full_like(infl, float("inf")))
    order = torch.argsort(infl, dim=1)
    cum = torch.cumsum(torch.gather(infl, 1, order), dim=1)
    drop_sorted = (cum <= share * slack[:, None]) & torch.isfinite(cum)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return torch.where(drop, torch.zeros_like(s), s)


def flat2(per_layer: list) -> torch.Tensor:
    """Per ReLU layer tensors ``(N, M, n_i)`` concatenated: ``(N, M, n)``."""
    return torch.cat(list(per_layer), dim=2)


def drop_slopes(alphas: list, splits: list, cands: torch.Tensor) -> list:
    """Per ReLU layer the slopes ``(k, M, n_i)`` warm-starting the re-verification of candidates ``cands``
    ``(k, n)``: ``alphas`` (the source domains'), with a dropped literal's neuron at lower slope 1 if it was
    split active, 0 if inactive (the lower line that equals the split neuron's exact line on its phase)."""
    out, at = [], 0
    for a, s in zip(alphas, splits):
        c = cands[:, at:at + s.shape[1]]
        at += s.shape[1]
        dropped = ((s != 0) & (c == 0))[:, None]
        a = torch.where(dropped & (s > 0)[:, None], torch.ones_like(a), a)
        out.append(torch.where(dropped & (s < 0)[:, None], torch.zeros_like(a), a))
    return out


class ClauseStore:
    """The kept clauses of one box: ``signs`` ``(K, n)`` int8 over the flat neuron index of ReLU layers of
    ``sizes`` neurons; at most ``cap``."""

    def __init__(self, sizes, cap: int, device):
        self.sizes = list(sizes)
        self.cap = cap
        self.signs = torch.zeros(0, sum(self.sizes), dtype=torch.int8, device=device)

    def __len__(self) -> int:
        return self.signs.shape[0]

    def add(self, new: torch.Tensor) -> int:
        """Merge re-verified clauses ``new`` ``(k, n)`` int8 (the caller proved each one); drop subsumed ones,
        keep the ``cap`` shortest. Returns how many of ``new`` are in the store afterwards."""
        if new.shape[0] == 0:
            return 0
        new = torch.unique(new, dim=0)
        new = new[(new != 0).any(dim=1)]
        if len(self):
            new = new[~subsumes(self.signs, new).any(dim=0)]
        if new.shape[0] == 0:
            return 0
        within = subsumes(new, new)
        within.fill_diagonal_(False)  # (unique rows: equal ones are gone)
        new = new[~within.any(dim=0)]
        old = self.signs[~subsumes(new, self.signs).any(dim=0)] if len(self) else self.signs
        both = torch.cat([new, old])
        order = torch.argsort((both != 0).sum(dim=1), stable=True)[:self.cap]
        self.signs = both[order]
        return int((order < new.shape[0]).sum())

    def known(self, cands: torch.Tensor) -> torch.Tensor:
        """``(k,)`` bool: candidates already implied by a kept clause (one of them subsumes it)."""
        if not len(self) or cands.shape[0] == 0:
            return torch.zeros(cands.shape[0], dtype=torch.bool, device=cands.device)
        return subsumes(self.signs, cands).any(dim=0)

    def apply(self, batch: ReluDomains):
        """Unit propagation (in place) and pruning on ``batch`` (see the module docstring). Returns
        ``(pruned (N,) bool, fixed)``: the domains inside a kept clause's region, and how many neurons unit
        propagation split."""
        N = len(batch)
        pruned = torch.zeros(N, dtype=torch.bool, device=batch.score.device)
        if not len(self) or N == 0:
            return pruned, 0
        S = self.signs.float()
        P, Q, A = (S > 0).float(), (S < 0).float(), S.abs()
        size = A.sum(dim=1)
        fixed = 0
        for _ in range(UNIT_ROUNDS):
            pos, neg, opn = literal_states(batch)
            hold = pos.float() @ P.T + neg.float() @ Q.T     # (N, K) literals that hold
            free = opn.float() @ A.T                         # (N, K) literals on free unstable neurons
            pruned |= (hold == size).any(dim=1)
            unit = (hold == size - 1) & (free == 1) & ~pruned[:, None]
            has = unit.any(dim=1)
            if not bool(has.any()):
                break
            dom = torch.nonzero(has).flatten()
            k = unit[dom].int().argmax(dim=1)                # one unit clause per domain and round
            j = (A[k] * opn[dom].float()).argmax(dim=1)      # its one open literal
            batch.fix(dom, j, -self.signs[k, j], self.sizes)
            fixed += dom.numel()
        return pruned, fixed


def reverify(ctx, store: ClauseStore, cands: torch.Tensor, src: ReluDomains, root_pre, cons, method: str,
             iters: int) -> torch.Tensor:
    """``(k,)`` bool: which candidate clauses ``cands`` ``(k, n)`` int8 a rigorous bound proves. Each is bounded as
    a domain of its own over the root box ``ctx.lower``/``ctx.upper``: split at its literals, intermediate bounds
    ``root_pre`` (per ReLU layer ``(1, n_i)`` pairs, valid on the box) clamped at them, multi-neuron constraints
    ``cons`` (the root's, or None), warm-started from ``src`` (the ``k`` domains the candidates came from:
    slopes, split multipliers on the kept literals, constraint multipliers); ``method`` with ``iters`` steps on
    every row. Verified through :func:`relaxations.verdict.proven` on every polytope (or rigorous
    infeasibility), as the loop verifies a domain."""
    k = cands.shape[0]
    offsets = [0]
    for n in store.sizes:
        offsets.append(offsets[-1] + n)
    splits, pre, betas = [], [], []
    for i, (l, u) in enumerate(root_pre):
        s = cands[:, offsets[i]:offsets[i + 1]].contiguous()
        splits.append(s)
        lo, up = l.expand(k, -1).clone(), u.expand(k, -1).clone()
        lo = torch.where(s > 0, lo.clamp(min=0), lo)
        up = torch.where(s < 0, up.clamp(max=0), up)
        pre.append((lo, up))
        betas.append(src.betas[i] * (s != 0)[:, None].to(src.betas[i].dtype))
    alphas = drop_slopes(src.alphas, src.splits, cands)
    state = DomainState(ctx.lower.expand(k, -1), ctx.upper.expand(k, -1), splits, pre, {"final": alphas},
                        betas, constraints=cons, gammas=None if cons is None else src.gammas)
    r = ctx.bound(state, method, iters, False)
    return proven(ctx.rows.score(r.lb)[0], ctx.opts.loop.verify_margin, r.infeasible)


def learn(ctx, store: ClauseStore, children: ReluDomains, coeffs: list, verified: torch.Tensor, root_pre, cons,
          method: str, iters: int, budget: int) -> None:
    """Learn from the ``verified`` ``(m,)`` children (``coeffs``: per ReLU layer their bounds' coefficients
    ``(m, M, n_i)``, zero on rows not bounded): strengthen their literal sets, re-verify up to ``budget``
    new candidates (the shortest first) in one batched bound, keep the proven ones (see the module docstring);
    counts in ``ctx.stats``."""
    t0 = time.monotonic()
    idx = torch.nonzero(verified).flatten()
    if idx.numel() == 0 or budget <= 0:
        return
    src = children.select(idx)
    cands = strengthen(src.splits, src.betas, [c[idx] for c in coeffs], root_pre, src.score.clamp(min=0))
    full = (flat(src.splits) != 0).sum(dim=1)
    size = (cands != 0).sum(dim=1)
    # a candidate with every literal of its child prunes nothing the tree would meet again; none at all is the root
    useful = (size > 0) & (size < full) & ~store.known(cands)
    cands, src = cands[useful], src.select(useful)
    if cands.shape[0]:
        cands, first = unique_rows(cands)
        src = src.select(first)
        order = torch.argsort((cands != 0).sum(dim=1), stable=True)[:budget]
        cands, src = cands[order], src.select(order)
        admit(ctx, store, cands, src, root_pre, cons, method, iters)
    ctx.stats.timed("time_clauses", t0)


def admit(ctx, store: ClauseStore, cands: torch.Tensor, src: ReluDomains, root_pre, cons, method: str,
          iters: int) -> torch.Tensor:
    """Re-verify the candidates ``cands`` ``(k, n)`` (:func:`reverify`, same arguments) and add the proven ones to
    ``store``: the only way into it. Returns which were proven ``(k,)``; counts in ``ctx.stats``."""
    ok = reverify(ctx, store, cands, src, root_pre, cons, method, iters)
    ctx.stats.add("clauses_learned", int(cands.shape[0]))
    ctx.stats.add("clauses_rejected", int((~ok).sum()))
    ctx.stats.add("clauses_kept", store.add(cands[ok]))
    ctx.stats["clauses"] = len(store)
    ctx.stats["clause_literals"] = round(float((store.signs != 0).sum(dim=1).float().mean()), 1) if len(store) else 0.0
    return ok


def unique_rows(x: torch.Tensor):
    """The distinct rows of ``x`` ``(k, n)`` and the index ``(k',)`` of each one's first occurrence."""
    u, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((u.shape[0],), x.shape[0], dtype=torch.long, device=x.device)
    first = first.scatter_reduce(0, inverse, torch.arange(x.shape[0], device=x.device), reduce="amin")
    return u, first
