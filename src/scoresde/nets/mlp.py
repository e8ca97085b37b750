"""A time-conditioned MLP for low-dimensional data (2-D toys, small vectors)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import GaussianFourierProjection, class_embedding, class_labels, sinusoidal_embedding


class TimeMLP(nn.Module):
    """``net(x, label)`` for ``x`` of shape ``[B, D]``: an embedding of ``label`` is added to every hidden layer.

    Args:
        dim: data dimension ``D``.
        hidden: width of the hidden layers; ``depth``: number of hidden layers.
        embedding: ``"fourier"`` (Gaussian random features of the label, ``fourier_scale``)
            or ``"sinusoidal"`` (DDPM's positional embedding; use with ``time_scale=999``).
        embed_dim: size of the label embedding.
        num_classes: make the network class-conditional, ``net(x, label, y)``: a learned
            embedding of the class ``y`` (``[B]``; ``num_classes`` or ``y=None`` is the null
            label) is added to the time embedding. ``None``: unconditional.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, embedding: str = "fourier",
                 embed_dim: int = 64, fourier_scale: float = 16.0, num_classes: int | None = None) -> None:  # fmt: skip
        super().__init__()
        if embedding not in ("fourier", "sinusoidal"):
            raise ValueError(f"unknown embedding {embedding!r}; choose 'fourier' or 'sinusoidal'")
        self.dim, self.embedding, self.embed_dim = dim, embedding, embed_dim
        self.config = {"dim": dim, "hidden": hidden, "depth": depth, "embedding": embedding,
                       "embed_dim": embed_dim, "fourier_scale": fourier_scale, "num_classes": num_classes}  # fmt: skip
        self.num_classes = num_classes
        if embedding == "fourier":
            self.fourier = GaussianFourierProjection(embed_dim // 2, fourier_scale)
        self.embed = nn.Sequential(nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        if num_classes is not None:
            self.class_embed = class_embedding(num_classes, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, label: Tensor, y: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape [B, {self.dim}], got {tuple(x.shape)}")
        y = class_labels(y, x, self.num_classes)
        emb = self.fourier(label) if self.embedding == "fourier" else sinusoidal_embedding(label, self.embed_dim)
        temb = self.embed(emb.to(x.dtype))
        if y is not None:
            temb = temb + self.class_embed(y)
        h = self.inp(x)
        for layer in self.hidden:
            h = layer(torch.nn.functional.silu(h + temb))
        return self.out(torch.nn.functional.silu(h))
