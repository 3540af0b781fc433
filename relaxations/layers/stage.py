"""A computation graph (DAG) run as a chain: :class:`Stage`, an affine step on a tuple of live tensors.

A DAG is lowered to a chain (``bnb/io/onnx_graph.py``) whose state between two layers is the flat concatenation
of the tensors still needed later ("slots"). A :class:`Stage` maps the slots of one state to the slots of the
next: each output slot is the sum of one or more *terms*, a primitive affine layer applied to one input slot
(or to the whole state). A tensor that is carried past a step is an identity term; a residual ``Add`` is two
terms on one output slot; a tensor used twice (fan-out) is read by two terms, and its coefficients are
accumulated in :meth:`Stage.backward`. ReLU layers act on the whole state (see the lowering for how a carried
tensor passes them unchanged), so every consumer of a chain (IBP, CROWN/alpha/beta, LP/MILP, BaB, attack)
works on graphs without knowing about them. The terms' layers are the other affine layers of
:mod:`relaxations.layers` (:class:`~relaxations.layers.gather.Gather` for index maps,
:class:`~relaxations.layers.matmul.MatMul`, convolutions, ...).
"""
from __future__ import annotations

import torch

from relaxations.fp import err_coeff, tiny
from relaxations.layers.base import Layer, dense_map


class Stage(Layer):
    """An affine step on a tuple of tensors: flat state ``(N, sum(in_sizes)) -> (N, sum(out_sizes))``.

    ``terms``: ``(j, s, layer)``: output slot ``j`` gets ``layer(input slot s)`` added (``s = None``: the whole
    input state); every output slot is the sum of its terms. A term's ``layer`` reads its slot at
    ``layer.in_shape`` and must produce exactly the size of slot ``j``.

    Rounding: a slot with several terms is one long sum of their products, so the forward bounds use
    ``n_forward`` = the longest such sum (terms' lengths plus one each) with ``magnitude`` = the sum of the terms'
    magnitudes. Backward: each term's own rounding (``layer.err_weight``), plus, when the stage has several
    terms, the rounding of the sums of the coefficients a slot receives and of the constants, each at most
    ``gamma_K`` times the sum of magnitudes (``K`` = number of terms) -- bounded by ``2 err_coeff(K) |A| .
    magnitude`` per term.
    """

    def __init__(self, in_sizes, out_sizes, terms):
        self.in_sizes, self.out_sizes = [int(s) for s in in_sizes], [int(s) for s in out_sizes]
        super().__init__((sum(self.in_sizes),), (sum(self.out_sizes),))
        self.in_off = [0]
        for s in self.in_sizes:
            self.in_off.append(self.in_off[-1] + s)
        self.out_off = [0]
        for s in self.out_sizes:
            self.out_off.append(self.out_off[-1] + s)
        self.terms = list(terms)
        for j, s, layer in self.terms:
            want = self.in_size if s is None else self.in_sizes[s]
            if layer.in_size != want or layer.out_size != self.out_sizes[j]:
                raise ValueError(f"term {layer!r} does not fit slot {s} ({want}) -> slot {j} ({self.out_sizes[j]})")
        if sorted({j for j, _, _ in self.terms}) != list(range(len(self.out_sizes))):
            raise ValueError("every output slot of a Stage needs a term")
        self.rep_err = max([t[2].rep_err for t in self.terms] + [0.0])
        # dtype/device of the stage's tensors, for Network.dtype/device and offset()
        self.ref = next((v for _, _, layer in self.terms for v in vars(layer).values()
                         if isinstance(v, torch.Tensor) and v.is_floating_point()),
                        torch.zeros((), dtype=torch.float64))
        self.ref = torch.zeros((), dtype=self.ref.dtype, device=self.ref.device)

    def _slot(self, x, s, layer):
        B = x.shape[0]
        xs = x if s is None else x[:, self.in_off[s]:self.in_off[s + 1]]
        return xs.reshape(B, *layer.in_shape)

    def _map(self, x, fn):
        B = x.shape[0]
        x = x.reshape(B, -1)
        outs = [None] * len(self.out_sizes)
        for j, s, layer in self.terms:
            y = fn(layer, self._slot(x, s, layer))
            y = torch.broadcast_to(y, (B, *layer.out_shape)).reshape(B, -1)
            outs[j] = y if outs[j] is None else outs[j] + y
        return torch.cat(outs, dim=1)

    def forward(self, x):
        """``(N, in_size) -> (N, out_size)``."""
        return self._map(x, lambda layer, xs: layer.forward(xs))

    def linear(self, x):
        return self._map(x, lambda layer, xs: layer.linear(xs))

    def abs_linear(self, r):
        return self._map(r, lambda layer, rs: layer.abs_linear(rs))

    def magnitude(self, r):
        return self._map(r, lambda layer, rs: layer.magnitude(rs))

    @property
    def n_forward(self):
        per = [0] * len(self.out_sizes)
        for j, _, layer in self.terms:
            per[j] += layer.n_forward + 1
        return max(per)

    @property
    def n_backward(self):
        return max(layer.n_backward for _, _, layer in self.terms) + len(self.terms)

    def offset(self):
        ref = self.ref
        outs = [torch.zeros(n, dtype=ref.dtype, device=ref.device) for n in self.out_sizes]
        for j, _, layer in self.terms:
            outs[j] = outs[j] + torch.broadcast_to(layer.offset().to(ref.dtype), layer.out_shape).reshape(-1)
        return torch.cat(outs)

    def backward(self, A):
        """``A``: ``(N, m, out_size)`` -> ``((N, m, in_size), (N, m) or None)``, coefficients accumulated per slot."""
        N, m = A.shape[:2]
        A = A.reshape(N, m, -1)
        back = A.new_zeros(N, m, self.in_size)
        const = None
        for j, s, layer in self.terms:
            Aj = A[..., self.out_off[j]:self.out_off[j + 1]].reshape(N, m, *layer.out_shape)
            b, c = layer.backward(Aj)
            b = b.reshape(N, m, -1)
            if s is None:
                back = back + b
            else:
                back[..., self.in_off[s]:self.in_off[s + 1]] += b
            if c is not None:
                const = c if const is None else const + c
        return back, const

    def err_weight(self, r):
        N = r.shape[0]
        r = r.reshape(N, -1)
        dt = r.dtype
        w = r.new_zeros(N, self.out_size)
        under = r.new_zeros(N, 1)
        extra = 2 * err_coeff(len(self.terms), dt) if len(self.terms) > 1 else 0.0
        for j, s, layer in self.terms:
            rs = self._slot(r, s, layer)
            wt, ut = layer.err_weight(rs)
            sl = slice(self.out_off[j], self.out_off[j + 1])
            if wt is not None:
                w[:, sl] += torch.broadcast_to(wt, (N, *layer.out_shape)).reshape(N, -1)
                under = under + ut
            if extra:
                mag = torch.broadcast_to(layer.magnitude(rs), (N, *layer.out_shape)).reshape(N, -1)
                w[:, sl] += extra * mag
        # never None, even when exact: see Gather.err_weight
        under = under + (len(self.terms) + 4) * tiny(dt) * (1 + r.sum(-1, keepdim=True))
        return w, under

    def to(self, device=None, dtype=None):
        for _, _, layer in self.terms:
            layer.to(device=device, dtype=dtype)
        self.rep_err = max([t[2].rep_err for t in self.terms] + [0.0])
        self.ref = self.ref.to(device=device, dtype=dtype)
        return self

    def dense(self):
        W = torch.zeros(self.out_size, self.in_size, dtype=torch.float64)
        b = torch.zeros(self.out_size, dtype=torch.float64)
        for j, s, layer in self.terms:
            Wt, bt = dense_map(layer)
            rows = slice(self.out_off[j], self.out_off[j + 1])
            cols = slice(0, self.in_size) if s is None else slice(self.in_off[s], self.in_off[s + 1])
            W[rows, cols] += Wt
            b[rows] += bt
        return W, b

    def __repr__(self):
        return f"Stage({self.in_sizes} -> {self.out_sizes}, {len(self.terms)} terms)"
