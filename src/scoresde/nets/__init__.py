"""Score networks: a time-conditioned MLP for low-dimensional data and the NCSN++ / DDPM++ / DDPM U-Nets."""

from .mlp import TimeMLP
from .ncsnpp import NCSNpp, count_parameters, ddpm_cifar10, ddpmpp_cifar10, ddpmpp_small, ncsnpp_cifar10

__all__ = ["NCSNpp", "TimeMLP", "count_parameters", "ddpm_cifar10", "ddpmpp_cifar10", "ddpmpp_small", "ncsnpp_cifar10"]
