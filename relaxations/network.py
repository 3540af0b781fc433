"""The internal network: a sequence of layers from :mod:`relaxations.layers`.

Conventions: ``forward`` takes a flat ``(N, in_size)`` batch (or ``(N, *in_shape)``) and returns a flat
``(N, out_size)`` batch, so that ``X_i`` / ``Y_j`` of a VNN-LIB file index the inputs and outputs
directly. The container is a plain list; a residual ``Add`` would join as a layer that names a second
input, which is why layers are kept apart from this container.
"""
from __future__ import annotations

import copy
import math

import torch

from relaxations.layers import Conv2d, ElementwiseAffine, Layer, LeakyReLU, Linear, ReLU, Reshape, SmoothActivation


class UnsupportedNetwork(ValueError):
    """A method that does not apply to this network's activations (e.g. ReLU splitting on a sigmoid network)."""


class Network:
    def __init__(self, layers: list[Layer], in_shape):
        self.layers = list(layers)
        self.in_shape = tuple(in_shape)
        shape = self.in_shape
        for layer in self.layers:
            if layer.in_shape != shape:
                raise ValueError(f"layer {layer!r} expects input shape {layer.in_shape}, gets {shape}")
            shape = layer.out_shape
        self.out_shape = shape

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)

    @property
    def dtype(self):
        for layer in self.layers:
            for v in vars(layer).values():
                if isinstance(v, torch.Tensor) and v.is_floating_point():  # not an index tensor
                    return v.dtype
        return torch.float64

    @property
    def device(self):
        for layer in self.layers:
            for v in vars(layer).values():
                if isinstance(v, torch.Tensor):
                    return v.device
        return torch.device("cpu")

    def relu_indices(self) -> list[int]:
        """Positions in ``layers`` of the ReLU layers, in order (only ReLU: see :meth:`activation_indices`)."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, ReLU)]

    def activation_indices(self) -> list[int]:
        """Positions in ``layers`` of every activation (non-affine) layer, in order: what the bounding methods
        relax (ReLU, sigmoid, tanh, softplus, LeakyReLU)."""
        return [i for i, layer in enumerate(self.layers) if not layer.affine]

    @property
    def relu_only(self) -> bool:
        """True when every activation is a ReLU: what ReLU splitting, multi-neuron constraints, the LP/MILP
        encodings and the float32 evaluation bound require."""
        return self.relu_indices() == self.activation_indices()

    def require_relu(self, what: str) -> None:
        """Raise :class:`UnsupportedNetwork` naming ``what`` when the network has an activation other than ReLU."""
        if not self.relu_only:
            kinds = sorted({repr(self.layers[i]).split("(")[0] for i in self.activation_indices()
                            if not isinstance(self.layers[i], ReLU)})
            raise UnsupportedNetwork(f"{what} supports ReLU networks only (this network has {', '.join(kinds)} "
                                     "layers)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_size)`` or ``(N, *in_shape)`` -> ``(N, out_size)``."""
        x = x.reshape(x.shape[0], *self.in_shape)
        for layer in self.layers:
            x = layer.forward(x)
        return x.reshape(x.shape[0], -1)

    __call__ = forward

    def to(self, device=None, dtype=None) -> "Network":
        """A copy with every tensor moved/cast."""
        net = copy.deepcopy(self)
        for layer in net.layers:
            layer.to(device=device, dtype=dtype)
        return net

    def describe(self) -> str:
        acts = [self.layers[i].out_size for i in self.activation_indices()]
        kinds = sorted({type(layer).__name__ for layer in self.layers})
        name = "ReLU" if self.relu_only else "activation"
        return (f"{self.in_size} inputs -> {self.out_size} outputs, {len(acts)} {name} layers "
                f"({sum(acts)} neurons: {acts}), layers: {', '.join(kinds)}")

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_torch(cls, module: torch.nn.Module, in_shape) -> "Network":
        """From an ``nn.Sequential`` of Linear / Conv2d / ReLU / Sigmoid / Tanh / Softplus (beta 1) / LeakyReLU /
        Flatten (float64 copy of the weights). (``nn.Softplus``'s threshold is a float shortcut: the real softplus.)"""
        layers: list[Layer] = []
        shape = tuple(in_shape)
        for mod in module.children() if isinstance(module, torch.nn.Sequential) else [module]:
            if isinstance(mod, torch.nn.Linear):
                if len(shape) != 1:
                    layers.append(Reshape(shape, (math.prod(shape),)))
                w = mod.weight.detach().double().clone()
                b = None if mod.bias is None else mod.bias.detach().double().clone()
                layers.append(Linear(w, b))
            elif isinstance(mod, torch.nn.Conv2d):
                if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
                    raise ValueError("only numeric zero padding is supported for Conv2d")
                w = mod.weight.detach().double().clone()
                b = None if mod.bias is None else mod.bias.detach().double().clone()
                layers.append(Conv2d(w, b, shape, mod.stride, mod.padding, mod.dilation, mod.groups))
            elif isinstance(mod, torch.nn.ReLU):
                layers.append(ReLU(shape))
            elif isinstance(mod, (torch.nn.Sigmoid, torch.nn.Tanh)):
                layers.append(SmoothActivation(shape, type(mod).__name__.lower()))
            elif isinstance(mod, torch.nn.Softplus) and mod.beta == 1:
                layers.append(SmoothActivation(shape, "softplus"))
            elif isinstance(mod, torch.nn.LeakyReLU):
                layers.append(LeakyReLU(shape, mod.negative_slope))
            elif isinstance(mod, torch.nn.Flatten):
                layers.append(Reshape(shape, (math.prod(shape),)))
            else:
                raise ValueError(f"unsupported module {type(mod).__name__} (Linear, Conv2d, ReLU, Sigmoid, Tanh, "
                                 "Softplus, LeakyReLU, Flatten only)")
            shape = layers[-1].out_shape
        return cls(layers, in_shape)

    def simplified(self) -> "Network":
        """Fold elementwise affine maps and reshapes into neighbouring affine layers (exact in reals)."""
        layers = list(self.layers)
        changed = True
        while changed:
            changed = False
            for i in range(len(layers) - 1):
                merged = _merge(layers[i], layers[i + 1])
                if merged is not None:
                    layers[i:i + 2] = merged
                    changed = True
                    break
        layers = [l for l in layers if not (isinstance(l, Reshape) and l.in_shape == l.out_shape)]
        return Network(layers, self.in_shape)


def _merge(a: Layer, b: Layer):
    """Replacement for the adjacent pair ``(a, b)``, or None when they stay apart."""
    if isinstance(a, Reshape) and isinstance(b, Reshape):
        return [Reshape(a.in_shape, b.out_shape)]
    if isinstance(a, ElementwiseAffine) and isinstance(b, ElementwiseAffine):
        return [ElementwiseAffine(a.scale * b.scale, a.shift * b.scale + b.shift)]
    if isinstance(a, ElementwiseAffine) and isinstance(b, Reshape):
        # elementwise maps commute with reshapes: move it later, towards the next affine layer
        return [b, ElementwiseAffine(a.scale.reshape(b.out_shape), a.shift.reshape(b.out_shape))]
    if isinstance(a, ElementwiseAffine) and isinstance(b, Linear):
        return [Linear(b.weight * a.scale.reshape(1, -1), b.weight @ a.shift.reshape(-1) + b.bias)]
    if isinstance(a, Linear) and isinstance(b, ElementwiseAffine):
        s, t = b.scale.reshape(-1), b.shift.reshape(-1)
        return [Linear(a.weight * s.reshape(-1, 1), a.bias * s + t)]
    if isinstance(a, Conv2d) and isinstance(b, ElementwiseAffine):
        s, t = b.scale, b.shift
        per_channel = all(torch.all(x == x[:, :1, :1]) for x in (s, t))
        if per_channel:
            sc, tc = s[:, 0, 0], t[:, 0, 0]
            conv = copy.copy(a)
            conv.weight = a.weight * sc.reshape(-1, 1, 1, 1)
            conv.bias = a.bias * sc + tc
            return [conv]
    return None
