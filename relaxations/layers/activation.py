"""The interface of activations: non-linear elementwise layers, and the linear relaxations they provide.

The bounding methods never look inside an activation. Given rigorous bounds ``l <= z <= u`` of its input on a
batch of domains, :meth:`Activation.relaxation` returns an :class:`ActivationRelaxation`: two linear functions
per neuron that enclose the activation on ``[l, u]``, and the life cycle of the parameters that alpha-CROWN may
optimise (the lower slopes of some neurons): their initial value (or warm start), their projection back onto the
set where every value gives a valid bound, and which neurons have one. Implementations:
:class:`~relaxations.layers.relu.ReLU`, :class:`~relaxations.layers.leaky_relu.LeakyReLU` and
:class:`~relaxations.layers.sshaped.SmoothActivation` (sigmoid, tanh, softplus).

Shapes: ``N`` domains, ``n`` neurons of the layer (flattened), ``m`` rows being back-substituted.
"""
from __future__ import annotations

import torch

from relaxations.fp import reach
from relaxations.layers.base import Layer


class ActivationRelaxation:
    """Linear bounds of one activation layer on ``N`` domains: for every input ``z`` of a domain,

        ``low_slope z + low_int  <=  act(z)  <=  up_slope z + up_int``      (elementwise, each ``(N, n)``)

    in real arithmetic for the float values held here, with any optimisable lower slope (see
    :meth:`lower_slope`) in place of ``low_slope``.

    Attributes every implementation sets: ``l``/``u`` ``(N, n)``, the input bounds the relaxation is valid on
    (split phases applied); ``infeasible`` ``(N,)`` bool, True only where the bounds prove the domain empty;
    ``split`` ``(N, n)`` (+1 / -1 / 0 in the working dtype) or None when nothing is split; ``low_slope``,
    ``up_slope``, ``up_int`` ``(N, n)``; ``low_int`` ``(N, n)`` or None for zero.

    Two forms. ReLU's (``general_lines`` False: ReLU, LeakyReLU): ``low_int`` is None, ``up_int >= 0``, every
    slope, optimised or not, ``>= 0``, and the parameters are lower slopes (:meth:`lower_slope`); the
    back-substitution's ReLU step relies on exactly that. General lines (``general_lines`` True: the smooth
    activations of :mod:`relaxations.layers.sshaped`): both intercepts of any sign, slopes ``>= 0``, parameters of
    any per-neuron shape ``(N, m, ..., n)`` that only the relaxation reads, through :meth:`lines`; the
    back-substitution takes them through ``relaxations.crown._general_step``.
    """

    low_int = None
    general_lines = False

    def lines(self, alpha: torch.Tensor | None = None):
        """``(low_slope, low_int, up_slope, up_int)``, each ``(N, 1, n)`` (defaults) or ``(N, m, n)`` for
        parameters ``alpha`` (``low_int`` None in ReLU's form)."""
        return self.lower_slope(alpha), None, self.up_slope[:, None], self.up_int[:, None]

    def lower_slope(self, alpha: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover - interface
        """The lower slopes: ``(N, 1, n)`` defaults, or ``(N, m, n)`` with ``alpha`` ``(N, m, n)`` on the
        optimisable neurons (the defaults elsewhere)."""
        raise NotImplementedError

    @property
    def optimisable(self) -> torch.Tensor:  # pragma: no cover - interface
        """``(N, n)`` bool: the neurons whose lower slope is a free parameter."""
        raise NotImplementedError

    def initial_alpha(self, rows: int, warm: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        """A fresh ``(N, rows, n)`` tensor of parameters to optimise: ``warm`` (e.g. the parent domain's) where its
        shape fits, else the default lower slopes."""
        raise NotImplementedError

    def project_(self, alpha: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Project ``alpha`` ``(N, m, n)`` in place onto the parameters that give valid bounds; returns it."""
        raise NotImplementedError

    def out_reach(self) -> torch.Tensor:  # pragma: no cover - interface
        """``(N, n)``: a rigorous bound on ``|act(z)|`` for every ``z`` in ``[l, u]``."""
        raise NotImplementedError

    @property
    def reach(self) -> torch.Tensor:
        """``(N, n)``: a bound on ``|z|`` on the domain."""
        return reach(self.l, self.u)

    def select(self, idx: torch.Tensor) -> "ActivationRelaxation":
        """The relaxation of the domains ``idx`` ``(k,)`` only: every tensor attribute indexed on its first axis."""
        out = object.__new__(type(self))
        for name, value in vars(self).items():
            setattr(out, name, value[idx] if isinstance(value, torch.Tensor) else value)
        return out


class Activation(Layer):
    """A non-linear elementwise layer, per-sample shape ``(*s) -> (*s)``. Not affine: the bounding methods relax
    it through :meth:`relaxation` (``backward``, ``dense`` and the rounding weights of affine layers do not
    apply)."""

    affine = False

    def __init__(self, shape):
        super().__init__(shape, shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """``(N, *s) -> (N, *s)``."""
        raise NotImplementedError

    def interval(self, l: torch.Tensor, u: torch.Tensor):  # pragma: no cover - interface
        """Rigorous elementwise bounds ``(N, *s)`` of the output for inputs in ``[l, u]`` ``(N, *s)``."""
        raise NotImplementedError

    def float_error(self, e: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """``(N, *s)``: a bound on ``|act_f32(x^) - act(x)|`` for inputs ``x`` in ``[l, u]`` (real) and float32
        inputs ``x^`` with ``|x^ - x| <= e`` (all ``(N, *s)``): the activation's step of
        :func:`relaxations.float_error.evaluation_error`."""
        raise NotImplementedError

    def relaxation(self, l: torch.Tensor, u: torch.Tensor, split: torch.Tensor | None = None,
                   lower_slope: str = "adaptive") -> ActivationRelaxation:  # pragma: no cover - interface
        """The linear relaxation on input bounds ``l``/``u`` ``(N, n)`` (flattened), with split phases ``split``
        ``(N, n)`` int8 or None; ``lower_slope``: how to choose the default lower slopes (a mode name of the
        activation, e.g. ReLU's ``adaptive``, ``zero``, ``one``)."""
        raise NotImplementedError
