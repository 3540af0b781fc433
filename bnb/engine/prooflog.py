"""The proof of one input box, recorded while branch and bound searches it, and written as a certificate
(``docs/certificates.md``, version 1, or 2 with multi-neuron constraints) once the box is unsat: the split tree,
the intermediate-bound claims of the nodes where they are computed, the root's multi-neuron constraints with their
validity certificates, and per refuted polytope the mixing weights and multipliers of the rows whose bound refuted
it. ``certcheck/`` checks the file without trusting any of it.

Everything is recorded as the engine computed it: node ids follow :class:`~bnb.engine.domains.InputDomains`,
claims are a bound's ``pre_bounds`` exactly (the bounds its relaxations were built on), multipliers are those of
the iterate whose bound was used (``BoundResult.lb_alphas``). What the format cannot express makes the log
``unsupported`` with a reason (:meth:`ProofLog.unsupported`): the run still answers, but writes no file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np
import torch

from bnb.engine.options import EngineOptions
from relaxations.state import BoundResult

FORMAT, VERSION, VERSION_MN = "bnb-certificate", 1, 2
KIND_ROOT, KIND_INPUT, KIND_RELU = 0, 1, 2


def _root_node() -> tuple:
    """A root's entry of :attr:`ProofLog.nodes`: parent -1, kind 0, no index, interval or phase."""
    return np.array([-1]), np.array([KIND_ROOT]), np.array([-1]), np.zeros(1), np.zeros(1), np.zeros(1)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def certifiable(res: BoundResult, method: str, opts: EngineOptions) -> str | None:
    """Why a bound of ``method`` cannot go into a certificate (``docs/certificates.md``), or None when it can: the
    certificate's rows use CROWN's relaxation with the adaptive default slopes or the recorded alpha/beta, over
    claims that are exactly the bounds those rows were computed on."""
    if method not in ("crown", "alpha", "beta", "mn-crown"):
        return f"bounding method {method}"
    if res.constraints is not None and (res.lb_gammas is None or any(
            c is not None and c.cert is None for c in res.constraints)):
        return "multi-neuron constraints without validity certificates or multipliers"
    if method == "crown" and (opts.bounds.lower_slope != "adaptive" or opts.bounds.intermediate == "forward"):
        return f"CROWN with lower_slope {opts.bounds.lower_slope}, intermediate {opts.bounds.intermediate}"
    if not res.lb_pre_exact:
        return "alpha-CROWN's intermediate bounds intersected over iterates"
    if method != "crown" and res.lb_alphas is None:
        return f"{method}-CROWN without the slopes of its reported iterate"
    return None


class ProofLog:
    """The proof of one box. ``relu_sizes``: neurons per ReLU layer; ``lower``/``upper`` ``(n_in,)``: the root box
    (the box the engine bounds, rounded outward from the file's); ``polytopes``: the box's polytopes in file order
    (their row counts go to the manifest); ``branching``: ``input`` or ``relu``."""

    def __init__(self, relu_sizes, lower, upper, polytopes, branching: str):
        self.sizes = [int(n) for n in relu_sizes]
        self.root = (_np(lower).astype(np.float64).reshape(-1), _np(upper).astype(np.float64).reshape(-1))
        self.poly_rows = [len(p.d) for p in polytopes]
        self.poly_ids = list(range(len(polytopes)))  # file-order number of each polytope the engine still works on
        self.branching = branching
        self.reason = None
        self.n = 1
        self.nodes = [_root_node()]
        self.claims, self.closures, self.terms, self.alphas, self.betas, self.hints = [], [], [], [], [], []
        self.n_close = self.n_alpha = self.n_beta = self.n_claims = 0
        self.cons, self.gammas, self.n_gamma = None, [], 0  # version 2: the root's constraints, gamma rows
        self.con_sel = None  # per layer, the root's constraints the later gammas refer to (None: all)
        self.con_counts = None  # per layer, the number of the root's constraints
        self.roots, self.answers = [0], None  # root nodes; per root the file numbers it answers for (None: all)
        self.tree_root = 0  # the node the next search's root domain is (bab.polytopes: each starts several)

    # -- what cannot be certified ---------------------------------------------------------------------------
    def unsupported(self, reason: str) -> None:
        """Give up on this proof (the first reason is kept); later calls record nothing."""
        if self.reason is None:
            self.reason = reason

    @property
    def active(self) -> bool:
        return self.reason is None

    def restrict(self, keep: list[bool]) -> None:
        """The engine dropped polytopes (refuted on the whole box): keep the file numbers of the others."""
        self.poly_ids = [p for p, k in zip(self.poly_ids, keep) if k]

    def tree(self, file_id: int, first: bool, root: BoundResult) -> None:
        """The next tree of ``bab.polytopes: each``, for the polytope numbered ``file_id`` in the file: the first
        keeps the root node, which then answers for the polytopes refuted at the root and this one; every later
        one is a new root node with the root bound ``root``'s claim and hints, answering for ``file_id`` only.
        From here on the engine's polytope 0 is ``file_id``."""
        if first:
            self.answers = [sorted(set(range(len(self.poly_rows))) - set(self.poly_ids) | {file_id})]
        else:
            node = self.n
            self.nodes.append(_root_node())
            self.n += 1
            self.root_claim(torch.tensor([node]), root)
            self.roots.append(node)
            self.answers.append([file_id])
        self.tree_root, self.poly_ids = self.roots[-1], [file_id]

    def tree_state(self) -> tuple:
        """What differs between the trees of ``bab.polytopes: each``: the tree's root node, its polytope's file
        number, its selection of the root's constraints (:meth:`enter` restores it)."""
        return self.tree_root, list(self.poly_ids), self.con_sel

    def enter(self, state: tuple) -> None:
        self.tree_root, self.poly_ids, self.con_sel = state[0], list(state[1]), state[2]

    # -- recording ------------------------------------------------------------------------------------------
    def children(self, parents, kind: int, index, lo=None, hi=None, phase=None) -> torch.Tensor:
        """Append ``m`` nodes, children of ``parents`` ``(m,)`` (node ids), made by ``kind`` on ``index`` ``(m,)``
        (input dimension or flat neuron), with intervals ``lo``/``hi`` ``(m,)`` (input cuts) or ``phase``
        ``(m,)`` (ReLU splits). Returns their ids ``(m,)`` (long, on ``parents``' device)."""
        m = int(parents.shape[0])
        ids = torch.arange(self.n, self.n + m, device=parents.device)
        if not self.active:
            return ids
        zeros = np.zeros(m)
        self.nodes.append((_np(parents).astype(np.int64), np.full(m, kind), _np(index).astype(np.int64),
                           zeros if lo is None else _np(lo).astype(np.float64),
                           zeros if hi is None else _np(hi).astype(np.float64),
                           zeros if phase is None else _np(phase)))
        self.n += m
        return ids

    def claim(self, nodes, pre_bounds) -> None:
        """Claims at ``nodes`` ``(m,)``: ``pre_bounds``, per ReLU layer ``(l, u)`` ``(m, n_i)``, the bounds that the
        nodes' relaxations were built on."""
        if not self.active or not len(nodes):
            return
        lo = torch.cat([l.reshape(len(nodes), -1) for l, _ in pre_bounds], dim=1)
        hi = torch.cat([u.reshape(len(nodes), -1) for _, u in pre_bounds], dim=1)
        if lo.shape[1] != sum(self.sizes):
            self.unsupported(f"claims of {lo.shape[1]} neurons, not {sum(self.sizes)}")
            return
        self.claims.append((_np(nodes).astype(np.int64), _np(lo), _np(hi)))
        self.n_claims += len(nodes)

    def root_claim(self, node, root: BoundResult) -> None:
        """The claim of a root ``node`` ``(1,)``: the root bound ``root``'s intermediate bounds, with its hints
        (record the root's constraints first: a tightened bound's hint takes them with gamma)."""
        claim = self.n_claims
        self.claim(node, root.pre_bounds)
        self.hint(claim, root.pre_hints, root.pre_hint_rows)

    def hint(self, claim: int, pre_hints, hint_rows=None) -> None:
        """The slopes behind claim number ``claim`` (a one-node claim): ``pre_hints`` and ``hint_rows`` as
        :attr:`relaxations.state.BoundResult.pre_hints` (domain 0 of it) and ``pre_hint_rows`` (which replace
        the former on their neurons and sides, and take the recorded constraints with gamma)."""
        if not self.active:
            return
        offsets = np.cumsum([0] + self.sizes)
        per = {}  # layer -> [(neurons (h,), sides (h,), slopes (h, n_0 + .. + n_{j-1}), gammas (h, C) or None)]
        for j, (sel, per_layer) in (pre_hints or {}).items():
            k = sel.shape[1]
            neuron = _np(sel[0]).astype(np.int64)
            per.setdefault(j, []).append((np.concatenate([neuron, neuron]), np.repeat([1, -1], k), _np(
                torch.cat([a[0] for a in per_layer], dim=1)), None))
        for j, h in enumerate(hint_rows or []):
            if h is None or not len(h["neuron"]):
                continue
            C, coff = sum(self.con_counts or [0]), np.cumsum([0] + (self.con_counts or []))
            g = np.zeros((len(h["neuron"]), C))
            for i, x in enumerate(h["gamma"]):
                if x is not None and x.shape[1]:
                    if self.cons is None or x.shape[1] > self.con_counts[i]:
                        self.unsupported("a tightened bound's multipliers without the root's constraints")
                        return
                    g[:, coff[i]:coff[i] + x.shape[1]] = x
            new, kept = set(zip(h["neuron"].tolist(), h["side"].tolist())), []
            for n, sd, a, _ in per.get(j, []):  # alpha-CROWN's hints where the tightening did not replace them
                keep = np.array([(v, w) not in new for v, w in zip(n.tolist(), sd.tolist())], dtype=bool)
                kept.append((n[keep], sd[keep], a[keep], None))
            per[j] = kept + [(h["neuron"], h["side"], np.concatenate(h["alpha"], axis=1), g)]
        for j, entries in per.items():
            for neuron, sides, rows, g in entries:
                h = len(neuron)
                if not h:
                    continue
                a = np.zeros((h, offsets[-1]), dtype=rows.dtype)
                a[:, :rows.shape[1]] = rows
                gref = np.full(h, -1)
                if g is not None:
                    self.gammas.append(g)
                    gref = np.arange(self.n_gamma, self.n_gamma + h)
                    self.n_gamma += h
                self.hints.append((np.full(h, claim), offsets[j] + neuron, sides,
                                   np.arange(self.n_alpha, self.n_alpha + h), gref))
                self.alphas.append(a)
                self.n_alpha += h

    def constraints(self, cons) -> None:
        """The root's multi-neuron constraints: per ReLU layer a
        :class:`~relaxations.multineuron.LayerConstraints` with its validity certificate ``cert``, or None. They
        are numbered layer by layer (the columns of every gamma recorded after)."""
        if not self.active or cons is None or all(c is None for c in cons):
            return
        if self.cons is not None or any(c is not None and c.cert is None for c in cons):
            self.unsupported("multi-neuron constraints recorded twice, or without validity certificates")
            return
        n_in, off = self.root[0].size, np.cumsum([0] + self.sizes)
        counts = [0 if c is None else c.count for c in cons]
        coff = np.cumsum([0] + counts)
        C, nt = int(coff[-1]), int(off[-1])
        out = {k: [] for k in ("con_layer", "con_y", "con_z", "con_p", "con_oct", "con_noct", "con_mu", "mu",
                               "oct_layer", "oct_row", "oct_beta", "oct_alpha", "oct_gamma")}
        n_oct = n_mu = 0
        for k, c in enumerate(cons):
            if c is None:
                continue
            m, cert = c.count, c.cert
            Y, Z = np.zeros((m, n_in + nt)), np.zeros((m, nt))
            Y[:, n_in + off[k]:n_in + off[k + 1]] = _np(c.Pz)
            Z[:, off[k]:off[k + 1]] = _np(c.Px)
            if c.Ph is not None:
                hs = slice(0, n_in) if k == 0 else slice(n_in + off[k - 1], n_in + off[k])
                if c.Ph.shape[1] != hs.stop - hs.start:
                    self.unsupported("multi-neuron constraints on a layer that is not the previous one")
                    return
                Y[:, hs] = _np(c.Ph)
            R = len(cert["oct_beta"])
            if R:
                rows, a, g = np.zeros((R, nt)), np.zeros((R, nt)), np.zeros((R, C))
                rows[:, off[k]:off[k + 1]] = cert["oct_row"]
                for j, x in enumerate(cert["oct_alpha"] or []):
                    a[:, off[j]:off[j + 1]] = x
                for j, x in enumerate(cert["oct_gamma"] or []):
                    if x is not None:
                        g[:, coff[j]:coff[j] + x.shape[1]] = x
                self.alphas.append(a)
                self.gammas.append(g)
                out["oct_alpha"].append(np.arange(self.n_alpha, self.n_alpha + R))
                out["oct_gamma"].append(np.arange(self.n_gamma, self.n_gamma + R))
                self.n_alpha += R
                self.n_gamma += R
                out["oct_row"].append(rows)
                out["oct_beta"].append(cert["oct_beta"])
                out["oct_layer"].append(np.full(R, k))
            sizes = [len(x) for x in cert["mu"]]
            out["con_mu"].append(n_mu + np.cumsum([0] + sizes[:-1]))
            out["mu"] += cert["mu"]
            n_mu += sum(sizes)
            out["con_oct"].append(n_oct + cert["con_oct"])
            n_oct += R
            for key, val in (("con_layer", np.full(m, k)), ("con_y", Y), ("con_z", Z), ("con_p", _np(c.p)),
                             ("con_noct", cert["con_noct"])):
                out[key].append(val)
        self.cons = {k: np.concatenate(v) if v else None for k, v in out.items()}
        self.con_counts = counts

    def select_constraints(self, kept) -> None:
        """From now on gammas are over a subset of the root's constraints: per ReLU layer the numbers ``kept`` of
        the root's constraints of that layer (a tensor) or None for none."""
        if self.active:
            self.con_sel = kept

    def close(self, nodes, closed, weights, rows, alphas=None, betas=None, gammas=None) -> None:
        """Polytopes refuted at ``nodes`` ``(m,)``: ``closed`` ``(m, K)`` bool over the engine's current polytopes,
        ``weights`` ``(m, K, R)`` the mixing weights behind each value (``Rows.mixed``), ``rows`` the engine's
        :class:`~bnb.engine.rows.Rows`; ``alphas``/``betas``: per ReLU layer ``(m, M, n_i)`` the multipliers of
        every row's bound (``BoundResult.lb_alphas``/``lb_betas``), or None for the default slopes / no splits;
        ``gammas``: per ReLU layer ``(m, M, c_i)`` or None, the multipliers of the recorded constraints
        (``BoundResult.lb_gammas``), or None for none."""
        if not self.active:
            return
        pairs = torch.nonzero(closed)
        if not pairs.numel():
            return
        if weights is None:
            self.unsupported("a polytope refuted without linear bounds (IBP or LP)")
            return
        i, k = pairs[:, 0], pairs[:, 1]
        w = weights[i, k].masked_fill(~rows.valid[k], 0)                      # (P, R)
        t_pair, t_pos = torch.nonzero(w > 0, as_tuple=True)
        if not bool((w > 0).any(dim=1).all()):
            self.unsupported("a refuted polytope without a positive mixing weight")
            return
        T = t_pair.shape[0]
        glob = rows.index[k[t_pair], t_pos]                                   # (T,) the engine's row numbers
        base = self.n_close
        poly = torch.tensor(self.poly_ids, device=k.device)[k]
        self.closures.append((_np(nodes[i]).astype(np.int64), _np(poly)))
        alpha_ref = beta_ref = np.full(T, -1)
        if alphas is not None:
            a = torch.cat([x[i[t_pair], glob].reshape(T, -1) for x in alphas], dim=1)
            self.alphas.append(_np(a))
            alpha_ref = np.arange(self.n_alpha, self.n_alpha + T)
            self.n_alpha += T
        if betas is not None:
            b = torch.cat([x[i[t_pair], glob].reshape(T, -1) for x in betas], dim=1)
            self.betas.append(_np(b))
            beta_ref = np.arange(self.n_beta, self.n_beta + T)
            self.n_beta += T
        gamma_ref = np.full(T, -1)
        if gammas is not None and any(g is not None for g in gammas):
            sel = self.con_sel or [None if g is None else torch.arange(g.shape[-1]) for g in gammas]
            if self.cons is None or any(g is not None and (s is None or int(s.max()) >= c) for g, s, c in
                                        zip(gammas, sel, self.con_counts)):
                self.unsupported("constraint multipliers without the root's constraints")
                return
            g, coff = np.zeros((T, sum(self.con_counts))), np.cumsum([0] + self.con_counts)
            for x, s, c0 in zip(gammas, sel, coff):
                if x is not None:
                    g[:, c0 + _np(s).astype(np.int64)] = _np(x[i[t_pair], glob].reshape(T, -1))
            self.gammas.append(g)
            gamma_ref = np.arange(self.n_gamma, self.n_gamma + T)
            self.n_gamma += T
        self.terms.append((base + _np(t_pair).astype(np.int64), _np(t_pos).astype(np.int64),
                           _np(w[t_pair, t_pos]).astype(np.float64), alpha_ref, beta_ref, gamma_ref))
        self.n_close += int(pairs.shape[0])

    # -- the file -------------------------------------------------------------------------------------------
    def arrays(self, dtype: str, roots: bool = False) -> dict:
        """The certificate's arrays (``docs/certificates.md``), ``dtype`` the working dtype's name; with several
        roots (``bab.polytopes: each``), or ``roots``, also ``root_box`` and ``root_answers``."""
        fdt = np.float32 if dtype == "float32" else np.float64
        n_total = sum(self.sizes)

        def cat(chunks, j, dt, width=None):
            parts = [c[j] for c in chunks]
            if not parts:
                return np.zeros((0,) if width is None else (0, width), dt)
            return np.concatenate(parts).astype(dt, copy=False)

        parent, kind, index, lo, hi, phase = (cat(self.nodes, j, dt) for j, dt in enumerate(
            (np.int32, np.int8, np.int32, np.float64, np.float64, np.int8)))
        out = dict(root_lower=self.root[0], root_upper=self.root[1], parent=parent, kind=kind, index=index,
                   lo=lo, hi=hi, phase=phase,
                   claim_node=cat(self.claims, 0, np.int32), claim_lo=cat(self.claims, 1, fdt, n_total),
                   claim_hi=cat(self.claims, 2, fdt, n_total),
                   hint_claim=cat(self.hints, 0, np.int32), hint_neuron=cat(self.hints, 1, np.int32),
                   hint_side=cat(self.hints, 2, np.int8), hint_alpha=cat(self.hints, 3, np.int32),
                   close_node=cat(self.closures, 0, np.int32), close_poly=cat(self.closures, 1, np.int32),
                   term_close=cat(self.terms, 0, np.int32), term_row=cat(self.terms, 1, np.int32),
                   term_lam=cat(self.terms, 2, np.float64), term_alpha=cat(self.terms, 3, np.int32),
                   term_beta=cat(self.terms, 4, np.int32))
        if self.answers is not None or roots:  # the roots of this box, each answering for its polytopes
            out["root_box"] = np.zeros(len(self.roots), np.int32)
            out["root_answers"] = np.zeros((len(self.roots), len(self.poly_rows)), np.int8)
            for r, ids in enumerate(self.answers or [list(range(len(self.poly_rows)))]):
                out["root_answers"][r, ids] = 1
        # (with constraints in float64: the octahedral rows' slopes are float64 values)
        out["alpha"] = (np.concatenate(self.alphas) if self.alphas else np.zeros((0, n_total))).astype(
            fdt if self.cons is None else np.float64)
        out["beta"] = (np.concatenate(self.betas) if self.betas else np.zeros((0, n_total))).astype(fdt)
        if self.cons is not None:
            c, C = self.cons, sum(self.con_counts)  # (gamma in float64: the octahedral rows' are float64 values)
            out.update(term_gamma=cat(self.terms, 5, np.int32), hint_gamma=cat(self.hints, 4, np.int32),
                       con_box=np.zeros(C, np.int32),
                       oct_box=np.zeros(len(c["oct_beta"] if c["oct_beta"] is not None else []), np.int32),
                       gamma=np.concatenate(self.gammas) if self.gammas else np.zeros((0, C)))
            wide = {"con_y": n_total + len(self.root[0]), "con_z": n_total, "oct_row": n_total}
            for k, v in c.items():
                v = v if v is not None else np.zeros((0, wide[k]) if k in wide else 0)
                out[k] = v.astype(fdt if k in ("con_y", "con_z", "con_p") else np.float64 if k in (
                    "mu", "oct_beta", "oct_row") else np.int32)
        return out


# offsets each merged array's entries take (an index into another array, shifted by that array's length so far);
# -1 stays -1 (no entry)
_SHIFTS = {"parent": "parent", "claim_node": "parent", "close_node": "parent", "hint_claim": "claim_node",
           "hint_alpha": "alpha", "hint_gamma": "gamma", "term_alpha": "alpha", "term_beta": "beta",
           "term_close": "close_node"}


def merge(parts: list[dict]) -> dict:
    """One certificate's arrays from the arrays of each box's proof (``ProofLog.arrays``): one tree per box,
    rooted at that box's root node (the ``b``-th node of kind 0 is box ``b``'s root), or, where some box has one
    tree per polytope, the trees of each box in turn (``root_box`` says whose); every index shifted."""
    out = {}
    if "root_answers" in parts[0]:  # (every part has them, or none): box b's roots, answers padded to one width
        width = max(p["root_answers"].shape[1] for p in parts)
        out["root_box"] = np.concatenate([p["root_box"] + b for b, p in enumerate(parts)]).astype(np.int32)
        out["root_answers"] = np.concatenate([np.pad(p["root_answers"], ((0, 0), (0, width - p["root_answers"].shape[
            1]))) for p in parts])
    for name in parts[0]:
        if name in out:
            continue
        if name in ("root_lower", "root_upper"):
            out[name] = np.stack([p[name] for p in parts])
            continue
        chunks, base = [], {}
        for p in parts:
            a = p[name]
            if name in _SHIFTS:
                shift = base.get(_SHIFTS[name], 0)
                a = np.where(a >= 0, a + shift, a).astype(a.dtype)
            chunks.append(a)
            for key in set(_SHIFTS.values()):
                base[key] = base.get(key, 0) + len(p.get(key, ()))
        out[name] = np.concatenate(chunks)
    return out


def sparse_claims(arrays: dict) -> dict:
    """Claims of stable neurons as a sign only (``claim_state`` +1: ``l >= 0``, -1: ``u <= 0``, 0: the bounds are
    given), their bounds zeroed: the checker proves the sign with its own bounds. ACAS Xu's deep trees have ~7 %
    of their neurons unstable, so the zeros make the file ~8x smaller once compressed."""
    lo, hi = arrays["claim_lo"], arrays["claim_hi"]
    state = np.where(lo >= 0, 1, np.where(hi <= 0, -1, 0)).astype(np.int8)
    arrays["claim_state"] = state
    arrays["claim_lo"] = np.where(state == 0, lo, 0).astype(lo.dtype)
    arrays["claim_hi"] = np.where(state == 0, hi, 0).astype(hi.dtype)
    return arrays


def save(path, proofs: list[ProofLog], onnx_path, vnnlib_path, n_in: int, n_out: int, dtype: str,
         verifier: str, sparse: bool = True) -> int:
    """Write the proofs of a property's boxes (one :class:`ProofLog` each, in the file's order, all of one
    branching) as one certificate at ``path`` (atomically: a temporary file renamed); returns its size in bytes."""
    manifest = dict(format=FORMAT, version=VERSION_MN if proofs[0].cons is not None else VERSION,
                    onnx_sha256=sha256(onnx_path),
                    vnnlib_sha256=sha256(vnnlib_path), dtype=dtype, n_in=int(n_in), n_out=int(n_out),
                    relu_sizes=proofs[0].sizes, branching=proofs[0].branching,
                    polytope_rows=[p.poly_rows for p in proofs], verifier=verifier)
    arrays = merge([p.arrays(dtype, any(q.answers is not None for q in proofs)) for p in proofs])
    if sparse:
        arrays = sparse_claims(arrays)
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return os.path.getsize(path)
