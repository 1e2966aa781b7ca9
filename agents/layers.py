"""Batched layers: ``G`` independent models evaluated as one tensor operation.

Every reference population (nodes, students, speakers) is built from these, so training ``G``
models side by side is one ``baddbmm`` or one grouped convolution per layer, not a Python loop.
Since the losses are sums over models and Adam is elementwise, training them together is exactly
training them apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _init_uniform(bound: float, generator: torch.Generator | None, *params: nn.Parameter) -> None:
    """``U(-bound, bound)`` in place, in order (torch.nn's default init, drawn per model)."""
    with torch.no_grad():
        for param in params:
            param.uniform_(-bound, bound, generator=generator)


class BatchedLinear(nn.Module):
    """``G`` independent dense layers: ``(G, M, d_in) -> (G, M, d_out)`` by one ``baddbmm``.

    Args:
        groups: number of models ``G``.
        d_in: input features.
        d_out: output features.
        generator: RNG for the initialisation (torch's global one when ``None``).
    """

    def __init__(
        self, groups: int, d_in: int, d_out: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default init, per model
        self.weight = nn.Parameter(torch.empty(groups, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(groups, 1, d_out))
        _init_uniform(bound, generator, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class BatchedMLP(nn.Module):
    """``G`` independent MLPs, ``sizes[0] -> ... -> sizes[-1]``: ``(G, M, in) -> (G, M, out)``.

    Args:
        groups: number of models ``G``.
        sizes: layer widths, input first.
        generator: RNG for the initialisation.
        activation: applied between layers (and after the last one when ``last_activation``).
        last_activation: whether the output layer is followed by ``activation`` too.
    """

    def __init__(
        self,
        groups: int,
        sizes: Sequence[int],
        generator: torch.Generator | None = None,
        *,
        activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
        last_activation: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            BatchedLinear(groups, a, b, generator)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activation, self.last_activation = activation, last_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.last_activation:
                x = self.activation(x)
        return x


class BatchedConv2d(nn.Module):
    """``G`` independent convolutions as one grouped convolution.

    Input and output are ``(M, G * channels, H, W)``: model ``g`` owns channels
    ``[g * c, (g + 1) * c)``.
    """

    def __init__(
        self,
        groups: int,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(c_in * kernel * kernel)
        self.weight = nn.Parameter(torch.empty(groups * c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(groups * c_out))
        _init_uniform(bound, generator, self.weight, self.bias)
        self.groups, self.stride, self.padding = groups, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.groups)


class BatchedConvTranspose2d(nn.Module):
    """``G`` independent transposed convolutions as one grouped transposed convolution.

    Same layout as :class:`BatchedConv2d`: ``(M, G * c_in, H, W) -> (M, G * c_out, H', W')``,
    model ``g`` owning channels ``[g * c, (g + 1) * c)``. With ``kernel=4, stride=2,
    padding=1`` it doubles the spatial size (the DCGAN generator's up-sampling step).
    """

    def __init__(
        self,
        groups: int,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(c_out * kernel * kernel)  # nn.ConvTranspose2d's fan-in
        self.weight = nn.Parameter(torch.empty(groups * c_in, c_out, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(groups * c_out))
        _init_uniform(bound, generator, self.weight, self.bias)
        self.groups, self.stride, self.padding = groups, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, groups=self.groups
        )


def conv_out(size: int, kernel: int = 4, stride: int = 2, padding: int = 1) -> int:
    """Spatial size after one strided convolution."""
    return (size + 2 * padding - kernel) // stride + 1


def models_first(x: torch.Tensor) -> torch.Tensor:
    """``(B, G, ...) -> (G, B, ...)``: the batched layers' layout from a batch-first one."""
    return x.transpose(0, 1)
