"""Layers that let a computation graph (DAG) run as a chain: index maps, constant matrix products, and
:class:`Stage`, an affine step on a tuple of live tensors.

A DAG is lowered to a chain (``bnb/io/onnx_lowering.py``) whose state between two layers is the flat concatenation
of the tensors still needed later ("slots"). A :class:`Stage` maps the slots of one state to the slots of the
next: each output slot is the sum of one or more *terms*, a primitive affine layer applied to one input slot
(or to the whole state). A tensor that is carried past a step is an identity term; a residual ``Add`` is two
terms on one output slot; a tensor used twice (fan-out) is read by two terms, and its coefficients are
accumulated in :meth:`Stage.backward`. ReLU layers act on the whole state (see the lowering for how a carried
tensor passes them unchanged), so every consumer of a chain (IBP, CROWN/alpha/beta, LP/MILP, BaB, attack)
works on graphs without knowing about them.
"""
from __future__ import annotations

import copy

import torch

from relaxations.fp import err_coeff, tiny
from relaxations.layers.base import Layer


class Gather(Layer):
    """``y.flat[j] = x.flat[index[j]]`` (``index[j] = -1``: ``y.flat[j] = 0``): Slice, Split, Gather with constant
    indices, Transpose, zero Pad, one part of a Concat. Exact in the forward direction; its backward sums the
    coefficients of repeated indices (rounding bounded in :meth:`err_weight`)."""

    def __init__(self, in_shape, out_shape, index):
        super().__init__(in_shape, out_shape)
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if index.numel() != self.out_size or bool((index >= self.in_size).any()) or bool((index < -1).any()):
            raise ValueError(f"Gather index does not fit {self.in_shape} -> {self.out_shape}")
        self.index = torch.where(index < 0, torch.full_like(index, self.in_size), index)  # the zero column
        counts = torch.bincount(index[index >= 0], minlength=self.in_size) if self.in_size else torch.zeros(0)
        self.repeats = int(counts.max()) if counts.numel() else 0

    def forward(self, x):
        """``(N, *in) -> (N, *out)``."""
        B = x.shape[0]
        flat = torch.cat([x.reshape(B, -1), x.new_zeros(B, 1)], dim=1)
        return flat[:, self.index].reshape(B, *self.out_shape)

    linear = abs_linear = magnitude = reach_out = forward

    def interval(self, l, u):
        return self.forward(l), self.forward(u)  # exact

    def offset(self):
        return torch.zeros((), dtype=torch.float64, device=self.index.device)

    def backward(self, A):
        """``A``: ``(N, m, *out)`` -> ``(N, m, *in)`` (scatter-add); no constant."""
        N, m = A.shape[:2]
        out = A.new_zeros(N, m, self.in_size + 1)
        out.index_add_(2, self.index, A.reshape(N, m, -1))
        return out[..., :self.in_size].reshape(N, m, *self.in_shape), None

    def err_weight(self, r):
        """A zero weight when no index repeats (never None: crown's backward carries pending weights through a
        None layer by reshaping them, which only a reshape allows); a coefficient summed from ``k`` repeats errs
        by ``<= gamma_k sum |A_j| |x_index(j)|``."""
        under = torch.zeros(r.shape[0], 1, dtype=r.dtype, device=r.device)
        g = err_coeff(self.repeats, r.dtype) if self.repeats > 1 else 0.0
        return g * self.forward(r), under

    def to(self, device=None, dtype=None):
        self.index = self.index.to(device=device)
        return self

    def dense(self):
        W = torch.zeros(self.out_size, self.in_size + 1, dtype=torch.float64)
        W[torch.arange(self.out_size), self.index.cpu()] = 1.0
        return W[:, :self.in_size], torch.zeros(self.out_size, dtype=torch.float64)


class MatMul(Layer):
    """Product with a constant matrix ``W`` on the last two axes: ``y = x @ W`` (``side='right'``, ``W``: ``(k, n)``,
    per-sample ``(..., k) -> (..., n)``) or ``y = W @ x`` (``side='left'``, ``W``: ``(M, k)``, per-sample
    ``(..., k, n) -> (..., M, n)``)."""

    def __init__(self, weight: torch.Tensor, in_shape, side="right"):
        in_shape = tuple(int(s) for s in in_shape)
        if side == "right":
            if not in_shape or in_shape[-1] != weight.shape[0]:
                raise ValueError(f"x @ W with x {in_shape} and W {tuple(weight.shape)}")
            out = (*in_shape[:-1], weight.shape[1])
        else:
            if len(in_shape) < 2 or in_shape[-2] != weight.shape[1]:
                raise ValueError(f"W @ x with W {tuple(weight.shape)} and x {in_shape}")
            out = (*in_shape[:-2], weight.shape[0], in_shape[-1])
        super().__init__(in_shape, out)
        self.weight, self.side = weight, side

    @property
    def n_forward(self):
        return self.weight.shape[0] if self.side == "right" else self.weight.shape[1]

    @property
    def n_backward(self):
        return self.weight.shape[1] if self.side == "right" else self.weight.shape[0]

    def _apply(self, x, W):
        return torch.matmul(x, W) if self.side == "right" else torch.matmul(W, x)

    def forward(self, x):
        return self._apply(x, self.weight)

    linear = forward

    def abs_linear(self, r):
        return self._apply(r, self.weight.abs())

    def offset(self):
        return torch.zeros((), dtype=self.weight.dtype, device=self.weight.device)

    def backward(self, A):
        """``A``: ``(N, m, *out)`` -> ``(A W^T or W^T A: (N, m, *in), None)``."""
        return (torch.matmul(A, self.weight.T) if self.side == "right" else torch.matmul(self.weight.T, A)), None

    def dense(self):
        n = self.in_size
        eye = torch.eye(n, dtype=self.weight.dtype, device=self.weight.device).reshape(n, *self.in_shape)
        return self.forward(eye).reshape(n, -1).T.contiguous(), torch.zeros(self.out_size, dtype=self.weight.dtype)


class ConvTranspose2d(Layer):
    """``y = conv_transpose2d(x, weight) + bias``; ``weight``: ``(C_in, C_out / groups, kH, kW)``; per-sample
    ``(C_in, H, W) -> (C_out, H_out, W_out)``. Its backward is a convolution."""

    def __init__(self, weight, bias, in_shape, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                 dilation=(1, 1), groups=1):
        c, h, w = in_shape
        ks = weight.shape[2:]
        out_hw = [(s - 1) * stride[i] - 2 * padding[i] + dilation[i] * (ks[i] - 1) + output_padding[i] + 1
                  for i, s in enumerate((h, w))]
        super().__init__(in_shape, (weight.shape[1] * groups, *out_hw))
        self.weight = weight
        self.bias = torch.zeros(self.out_shape[0], dtype=weight.dtype) if bias is None else bias
        self.stride, self.padding, self.output_padding = tuple(stride), tuple(padding), tuple(output_padding)
        self.dilation, self.groups = tuple(dilation), int(groups)

    def _convt(self, x, weight, bias):
        return torch.nn.functional.conv_transpose2d(x, weight, bias, self.stride, self.padding,
                                                    self.output_padding, self.groups, self.dilation)

    def forward(self, x):
        return self._convt(x, self.weight, self.bias)

    @property
    def n_forward(self):
        return self.weight.shape[0] // self.groups * self.weight.shape[2] * self.weight.shape[3]

    @property
    def n_backward(self):
        return max(self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3],
                   self.out_shape[1] * self.out_shape[2] + self.out_shape[0])

    def linear(self, x):
        return self._convt(x, self.weight, None)

    def abs_linear(self, r):
        return self._convt(r, self.weight.abs(), None)

    def offset(self):
        return self.bias.reshape(-1, 1, 1)

    def backward(self, A):
        """``A``: ``(N, m, C_out, H_out, W_out)`` -> ``((N, m, C_in, H, W), (N, m))`` by a convolution."""
        n, m = A.shape[:2]
        back = torch.nn.functional.conv2d(A.reshape(n * m, *self.out_shape), self.weight, None, self.stride,
                                          self.padding, self.dilation, self.groups)
        return back.reshape(n, m, *self.in_shape), A.sum(dim=(3, 4)) @ self.bias

    def dense(self):
        n = self.in_size
        eye = torch.eye(n, dtype=self.weight.dtype, device=self.weight.device).reshape(n, *self.in_shape)
        cols = self._convt(eye, self.weight, None).reshape(n, -1)
        return cols.T.contiguous(), self.bias.repeat_interleave(self.out_shape[1] * self.out_shape[2])


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
                         if isinstance(v, torch.Tensor) and v.is_floating_point()), torch.zeros((), dtype=torch.float64))
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


def dense_map(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W (out_size, in_size), b (out_size,))`` float64 of an affine layer; from its ``linear`` on the identity
    when it has no ``dense`` of its own (ElementwiseAffine)."""
    try:
        W, b = layer.dense()
    except NotImplementedError:
        n = layer.in_size
        eye = torch.eye(n, dtype=torch.float64).reshape(n, *layer.in_shape)
        W = copy.deepcopy(layer).to(dtype=torch.float64).linear(eye).reshape(n, -1).T
        b = copy.deepcopy(layer).to(dtype=torch.float64).offset()
    b = torch.as_tensor(b).detach().cpu().double()
    b = b.reshape(-1) if b.numel() == layer.out_size else torch.broadcast_to(b, layer.out_shape).reshape(-1)
    return W.detach().cpu().double(), b
