"""Lowering the ops of a data path (:mod:`bnb.io.onnx_dataflow`) to the chain of layers a
:class:`relaxations.network.Network` holds.

Walking the ops in topological order, the chain's state is the flat concatenation of the tensors still needed
later. An affine op becomes a :class:`~relaxations.layers.Stage` (carried tensors are identity terms, a tensor
used twice is read by two terms). A ReLU acts on the whole state: a carried tensor that is the output of a ReLU
is non-negative and passes unchanged (``relu(t) = t``, a stable active neuron); any other carried tensor ``t``
is carried as ``(t, -t)`` and recombined as ``relu(t) - relu(-t) = t`` after it (exact in real arithmetic; the
pair is relaxed like any two neurons, and BaB may split it).

Any other activation (sigmoid, tanh, softplus, LeakyReLU) acts on its own slot of the state only: its layer is the
identity on the carried tensors (the layer's ``mask``).

Where only one tensor is live, the op's own layer is emitted (a ReLU at the tensor's per-sample shape), so a
model that is a chain of operators becomes the chain of their layers, and chain-shaped parts of a graph keep
their chain form.
"""
from __future__ import annotations

import math

import torch

from relaxations.layers import ElementwiseAffine, Gather, LeakyReLU, ReLU, Reshape, SmoothActivation, Stage


def _live_ops(ops: list, out: str) -> tuple[list, dict]:
    """The ops that ``out`` depends on, in order, and how often each tensor is read by them (``out`` once more)."""
    uses: dict[str, int] = {out: 1}
    keep = []
    for op in reversed(ops):
        if op[1] in uses:
            keep.append(op)
            for name in ([t[0] for t in op[2]] if op[0] == "affine" else [op[2]]):
                uses[name] = uses.get(name, 0) + 1
    return keep[::-1], uses


def _relu_shape(shape: tuple) -> tuple:
    """The shape of a chain step's ReLU on a tensor of full ONNX shape ``shape``: its per-sample shape where the
    leading dimension is a batch of 1, else flat."""
    return tuple(shape[1:]) if len(shape) > 1 and shape[0] == 1 else (math.prod(shape),)


def _activation(spec, shape: tuple, mask=None):
    """The layer of a non-ReLU activation op's ``(kind, param)`` at per-sample ``shape``, identity off ``mask``."""
    kind, param = spec
    if kind == "leaky_relu":
        return LeakyReLU(shape, param, mask)
    return SmoothActivation(shape, kind, mask)


def _negation(n: int) -> ElementwiseAffine:
    """``(n,) -> (n,)``: ``x -> -x``."""
    return ElementwiseAffine(-torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64))


def lower(ops: list, inp: str, out: str, shapes: dict) -> list:
    """The chain of layers (see the module docstring) computing ``out`` from ``inp``; ``shapes``: full ONNX shape
    of every data tensor. Consecutive layers may differ in the form of their shapes (:func:`adapt` joins them)."""
    ops, uses = _live_ops(ops, out)
    size = {k: math.prod(v) for k, v in shapes.items()}
    live, nonneg, layers = [inp], set(), []

    def stage(in_slots, out_slots, terms):
        """Append a Stage from ``in_slots`` to ``out_slots`` (names; terms (j, s, layer)) unless it is the identity."""
        if in_slots == out_slots and all(isinstance(t[2], Reshape) for t in terms) and len(terms) == len(in_slots):
            return
        if len(in_slots) == 1 and len(out_slots) == 1 and len(terms) == 1:
            layers.append(terms[0][2])  # a chain step: the op's own layer
            return
        layers.append(Stage([size[n] for n in in_slots], [size[n] for n in out_slots], terms))

    def carry(names, slots):
        return [(slots.index(n), names.index(n), Reshape((size[n],), (size[n],))) for n in names if n in slots]

    for op in ops:
        kind, name, arg = op[:3]
        consumed = [t[0] for t in arg] if kind == "affine" else [arg]
        for c in consumed:
            uses[c] -= 1
        if len(live) == 1 and consumed == live and not uses[live[0]]:  # a chain step: the op's own layer
            if kind == "affine":
                layers.append(arg[0][1])
            else:
                shape = _relu_shape(shapes[arg])
                layers.append(ReLU(shape) if kind == "relu" else _activation(op[3], shape))
                size[name] = size[arg]
            if kind == "relu":
                nonneg.add(name)
            live = [name]
            continue
        kept = [n for n in live if uses[n] > 0]
        if kind == "affine":
            outs = kept + [name]
            terms = carry(live, kept) + [(len(kept), live.index(i), layer) for i, layer in arg]
            stage(live, outs, terms)
            live = outs
            continue
        if kind == "act":  # another activation: on its own slot of the state, the identity on the carried ones
            size[name] = size[arg]
            outs = kept + [name]
            terms = carry(live, kept) + [(len(kept), live.index(arg), Reshape((size[arg],), (size[arg],)))]
            stage(live, outs, terms)
            mask = [False] * sum(size[n] for n in kept) + [True] * size[name]
            layers.append(_activation(op[3], (len(mask),), mask))
            live = outs
            continue
        size[name] = size[arg]
        nonneg.add(name)
        # ReLU on the whole state: the non-negative tensors pass; any other carried tensor t goes as (t, -t)
        pre, terms, post_terms = [], [], []
        for n in kept:
            s = live.index(n)
            pre.append(n)
            terms.append((len(pre) - 1, s, Reshape((size[n],), (size[n],))))
            if n not in nonneg:
                pre.append(f"{n}__neg")
                size[f"{n}__neg"] = size[n]
                terms.append((len(pre) - 1, s, _negation(size[n])))
        pre.append(name)
        terms.append((len(pre) - 1, live.index(arg), Reshape((size[arg],), (size[arg],))))
        stage(live, pre, terms)
        layers.append(ReLU((sum(size[p] for p in pre),)))
        outs = kept + [name]
        for j, n in enumerate(outs):
            post_terms.append((j, pre.index(n), Reshape((size[n],), (size[n],))))
            if n in kept and n not in nonneg:
                post_terms.append((j, pre.index(f"{n}__neg"), _negation(size[n])))
        stage(pre, outs, post_terms)
        live = outs
    if live != [out]:
        stage(live, [out], carry(live, [out]))
    return _merge_stages(layers)


def _compose(a: Stage, b: Stage):
    """One Stage computing ``b(a(x))``, when every term of ``b`` meets only reshapes (a carried tensor) on one side:
    then each composed term is still a single primitive layer. None otherwise."""
    by_slot: dict[int, list] = {}
    for t in a.terms:
        by_slot.setdefault(t[0], []).append(t)
    terms = []
    for j, k, lb in b.terms:
        if k is None:
            return None
        if isinstance(lb, Reshape):  # b carries slot k: a's terms for it go to slot j
            terms += [(j, s, la) for _, s, la in by_slot[k]]
        elif len(by_slot[k]) == 1 and isinstance(by_slot[k][0][2], Reshape):  # a carried what b maps
            terms.append((j, by_slot[k][0][1], lb))
        elif len(by_slot[k]) == 1 and isinstance(by_slot[k][0][2], Gather) and isinstance(lb, Gather):
            ga = by_slot[k][0][2]  # two index maps: one
            idx = torch.cat([ga.index, torch.tensor([-1])])[lb.index.clamp(max=ga.out_size)]
            idx = torch.where(lb.index >= lb.in_size, -1, torch.where(idx >= ga.in_size, -1, idx))
            terms.append((j, by_slot[k][0][1], Gather(ga.in_shape, lb.out_shape, idx)))
        else:
            return None
    return Stage(a.in_sizes, b.out_sizes, terms)


def _merge_stages(layers: list) -> list:
    """Consecutive Stages composed where :func:`_compose` can (fewer, larger steps: less work per
    back-substitution); a Stage left with one term on one slot becomes that term's layer."""
    out = []
    for layer in layers:
        if out and isinstance(out[-1], Stage) and isinstance(layer, Stage):
            merged = _compose(out[-1], layer)
            if merged is not None:
                out[-1] = merged
                continue
        out.append(layer)
    return [l.terms[0][2] if isinstance(l, Stage) and len(l.terms) == 1 and len(l.in_sizes) == 1
            and l.terms[0][1] is not None else l for l in out]


def adapt(layers: list, in_shape: tuple) -> list:
    """The layers joined into a chain from per-sample shape ``in_shape`` to a flat output: where a layer expects
    another form of the same size, a :class:`Reshape` (one, where the layer is a reshape itself)."""
    out, shape = [], tuple(in_shape)
    for layer in layers:
        if isinstance(layer, Reshape):
            if math.prod(layer.in_shape) != math.prod(shape):
                raise ValueError(f"layer {layer!r} expects {layer.in_shape}, gets {shape}")
            if layer.out_shape != shape:
                out.append(Reshape(shape, layer.out_shape))
            shape = layer.out_shape
            continue
        if layer.in_shape != shape:
            if math.prod(layer.in_shape) != math.prod(shape):
                raise ValueError(f"layer {layer!r} expects {layer.in_shape}, gets {shape}")
            out.append(Reshape(shape, layer.in_shape))
        out.append(layer)
        shape = layer.out_shape
    if len(shape) != 1:
        out.append(Reshape(shape, (math.prod(shape),)))
    return out
