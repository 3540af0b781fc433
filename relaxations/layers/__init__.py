"""Layer types of the internal network representation, one module per operator family.

Affine layers: :class:`Linear` (``linear.py``), :class:`Conv2d` and :class:`ConvTranspose2d` (``conv.py``),
:class:`ElementwiseAffine` (``elementwise.py``), :class:`Reshape` (``reshape.py``), :class:`Gather` (``gather.py``),
:class:`MatMul` (``matmul.py``) and :class:`Stage` (``stage.py``: a step of a computation graph lowered to a chain).
Activations (:class:`Activation`, ``activation.py``): :class:`ReLU` (``relu.py``), :class:`SmoothActivation`
(sigmoid, tanh, softplus: ``sshaped.py``) and :class:`LeakyReLU` (``leaky_relu.py``). The common interface is
:class:`Layer` (``base.py``).

Shapes in docstrings: ``N`` is the batch of subdomains (or points), ``m`` the number of linear
functions being back-substituted, ``*in``/``*out`` the per-sample tensor shape of the layer.
"""
from relaxations.layers.activation import Activation, ActivationRelaxation
from relaxations.layers.base import Layer, dense_map
from relaxations.layers.conv import Conv2d, ConvTranspose2d
from relaxations.layers.elementwise import ElementwiseAffine
from relaxations.layers.gather import Gather
from relaxations.layers.leaky_relu import LeakyReLU
from relaxations.layers.linear import Linear
from relaxations.layers.matmul import MatMul
from relaxations.layers.relu import ReLU, ReluRelaxation
from relaxations.layers.reshape import Reshape
from relaxations.layers.sshaped import SmoothActivation
from relaxations.layers.stage import Stage

__all__ = ["Layer", "dense_map", "Activation", "ActivationRelaxation", "Linear", "Conv2d", "ConvTranspose2d",
           "ElementwiseAffine", "Reshape", "ReLU", "ReluRelaxation", "SmoothActivation", "LeakyReLU", "Gather",
           "MatMul", "Stage"]
