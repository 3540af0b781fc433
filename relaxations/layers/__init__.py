"""Layer types of the internal network representation.

Shapes in docstrings: ``N`` is the batch of subdomains (or points), ``m`` the number of linear
functions being back-substituted, ``*in``/``*out`` the per-sample tensor shape of the layer.
"""
from relaxations.layers.base import Layer
from relaxations.layers.linear import Linear
from relaxations.layers.conv import Conv2d
from relaxations.layers.elementwise import ElementwiseAffine
from relaxations.layers.reshape import Reshape
from relaxations.layers.relu import ReLU
from relaxations.layers.graph import ConvTranspose2d, Gather, MatMul, Stage

__all__ = ["Layer", "Linear", "Conv2d", "ElementwiseAffine", "Reshape", "ReLU", "Gather", "MatMul", "ConvTranspose2d", "Stage"]
