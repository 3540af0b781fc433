"""2-D convolutions on ``(C, H, W)`` per-sample tensors: :class:`Conv2d` and :class:`ConvTranspose2d`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from relaxations.layers.base import Layer


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


class Conv2d(Layer):
    """``y = conv(x, weight) + bias``; ``weight``: ``(C_out, C_in / groups, kH, kW)``.

    Per-sample shapes ``(C_in, H, W) -> (C_out, H_out, W_out)``; symmetric zero padding.
    """

    def __init__(self, weight, bias, in_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                 groups=1):
        c, h, w = in_shape
        kh, kw = weight.shape[2:]
        out_shape = (weight.shape[0],
                     conv_output_size(h, kh, stride[0], padding[0], dilation[0]),
                     conv_output_size(w, kw, stride[1], padding[1], dilation[1]))
        super().__init__(in_shape, out_shape)
        self.weight = weight
        self.bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias
        self.stride, self.padding = tuple(stride), tuple(padding)
        self.dilation, self.groups = tuple(dilation), int(groups)
        # conv_transpose2d needs the rows/columns that the forward stride dropped
        self.output_padding = tuple(
            self.in_shape[1 + i] - ((self.out_shape[1 + i] - 1) * self.stride[i]
                                    - 2 * self.padding[i] + self.dilation[i] * (weight.shape[2 + i] - 1) + 1)
            for i in range(2))

    def _conv(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        """``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``."""
        return self._conv(x, self.weight, self.bias)

    @property
    def n_forward(self):
        return self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]

    @property
    def n_backward(self):
        # a transposed-convolution output sums (C_out / groups) kH kW terms; the constant H_out W_out + C_out
        per_group = self.weight.shape[0] // self.groups
        return max(per_group * self.weight.shape[2] * self.weight.shape[3],
                   self.out_shape[1] * self.out_shape[2] + self.out_shape[0])

    @property
    def n_coefficient(self):
        """Products in one entry of the backward's coefficients (a transposed convolution): each input position
        meets at most ``ceil(k g / s)`` kernel taps per dimension (``g = gcd(dilation, stride)``) in each of the
        ``C_out / groups`` channels; the other terms of the transposed convolution are exact zeros, and adding an
        exact zero rounds nothing. The constant sums ``H_out W_out + C_out`` terms (``n_backward``)."""
        taps = 1
        for i in range(2):
            k, s = self.weight.shape[2 + i], self.stride[i]
            taps *= min(k, -(-k * math.gcd(self.dilation[i], s) // s))
        return self.weight.shape[0] // self.groups * taps

    def linear(self, x):
        return self._conv(x, self.weight, None)

    def abs_linear(self, r):
        return self._conv(r, self.weight.abs(), None)

    def offset(self):
        return self.bias.reshape(-1, 1, 1)

    def backward(self, A):
        """``A``: ``(N, m, C_out, H_out, W_out)`` -> ``((N, m, C_in, H, W), (N, m))`` by transposed conv."""
        n, m = A.shape[:2]
        flat = A.reshape(n * m, *self.out_shape)
        back = F.conv_transpose2d(flat, self.weight, None, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)
        const = A.sum(dim=(3, 4)) @ self.bias
        return back.reshape(n, m, *self.in_shape), const

    def dense(self):
        n = self.in_size
        eye = torch.eye(n, dtype=self.weight.dtype, device=self.weight.device).reshape(n, *self.in_shape)
        cols = self._conv(eye, self.weight, None).reshape(n, -1)
        return cols.T.contiguous(), self.bias.repeat_interleave(self.out_shape[1] * self.out_shape[2])


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
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, self.output_padding, self.groups,
                                  self.dilation)

    def forward(self, x):
        """``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``."""
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
        back = F.conv2d(A.reshape(n * m, *self.out_shape), self.weight, None, self.stride, self.padding,
                        self.dilation, self.groups)
        return back.reshape(n, m, *self.in_shape), A.sum(dim=(3, 4)) @ self.bias

    def dense(self):
        n = self.in_size
        eye = torch.eye(n, dtype=self.weight.dtype, device=self.weight.device).reshape(n, *self.in_shape)
        cols = self._convt(eye, self.weight, None).reshape(n, -1)
        return cols.T.contiguous(), self.bias.repeat_interleave(self.out_shape[1] * self.out_shape[2])
