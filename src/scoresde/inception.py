r"""The standard FID Inception-v3 feature extractor (2048-d pool3 features), in plain torch.

This is the network of the reference FID implementation (TTUR) and of pytorch-fid,
torch-fidelity and clean-fid: the TensorFlow graph ``inception-2015-12-05`` ported to
PyTorch, whose weights are distributed as ``pt_inception-2015-12-05-6726825d.pth`` (a
plain state dict). It is *not* torchvision's ``inception_v3``; the differences are

* a 1008-way classifier ``fc`` (the 2015 graph's label space) and no auxiliary head;
* the average-pooling branches of the ``Mixed_5*`` (A), ``Mixed_6b-e`` (C) and
  ``Mixed_7b`` (E) blocks ignore the zero padding (``count_include_pad=False``, as
  TensorFlow's ``SAME`` average pooling does);
* the pooling branch of the last block ``Mixed_7c`` takes a 3x3 *max* pool (stride 1,
  padding 1), a quirk of that graph;
* every convolution is bias-free and followed by batch norm with ``eps = 1e-3``.

The weights are read from a local file only; scoresde never downloads anything. Both
``.pth``/``.pt`` (loaded with ``weights_only=True``: no code runs on load) and
``.safetensors`` files are accepted, and loading is strict: a file whose entries or
shapes differ fails with a message naming them. The ``*.num_batches_tracked`` counters
that ``torch.save(model.state_dict())`` writes for batch norms are ignored if present
(they only matter for training), so files with or without them load alike.

Preprocessing follows pytorch-fid: images ``[B, C, H, W]`` in ``[0, 1]`` are resized to
299x299 with ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing)
and mapped to ``[-1, 1]`` by ``2x - 1``. (TF1's resize differs slightly, so FID values
follow pytorch-fid's and may differ a little from those of the TensorFlow original.)
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_weights_strict

WEIGHTS_FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
RANGE_TOLERANCE = 1e-3  # how far outside [0, 1] pixel values may stray (rounding), as in scoresde.features

__all__ = [
    "INPUT_SIZE",
    "WEIGHTS_FILE_NAME",
    "FIDInceptionV3",
    "InceptionV3Features",
    "inception_features",
    "load_inception_state_dict",
]


class FrozenBatchNorm2d(nn.Module):
    """Inference-only batch norm with TF's ``eps = 1e-3``: always normalizes with the running statistics.

    Its state-dict entries are those of ``nn.BatchNorm2d`` without ``num_batches_tracked``
    (``weight``, ``bias``, ``running_mean``, ``running_var``), i.e. those of the weights file.
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class BasicConv2d(nn.Module):
    """Bias-free convolution, batch norm (``eps = 1e-3``), ReLU; entries ``conv.weight`` and ``bn.*``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn = FrozenBatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that, like TF's ``SAME`` pooling, averages over the valid (unpadded) pixels only."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block (``Mixed_5b/c/d``): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + ``pool_features``."""

    def __init__(self, in_ch: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_ch, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_ch, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_same(x))], dim=1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction (``Mixed_6a``): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + ``in_ch``."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class FIDInceptionC(nn.Module):
    """17x17 block (``Mixed_6b-e``) with factorized 7x7 convolutions of width ``c7`` -> 768 channels."""

    def __init__(self, in_ch: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = layer(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(_avg_pool_same(x))], dim=1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction (``Mixed_7a``): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + ``in_ch``."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class FIDInceptionE(nn.Module):
    """8x8 block (``Mixed_7b`` with ``pool="avg"``, ``Mixed_7c`` with ``pool="max"``) -> 2048 channels."""

    def __init__(self, in_ch: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_ch, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_ch, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_ch, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        s3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.pool == "max" else _avg_pool_same(x)
        branches = [self.branch1x1(x), self.branch3x3_2a(s3), self.branch3x3_2b(s3)]
        branches += [self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3), self.branch_pool(pooled)]
        return torch.cat(branches, dim=1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 network (random initialization; see :class:`InceptionV3Features` for the real one).

    Its state-dict entries and shapes are exactly those of ``pt_inception-2015-12-05-6726825d.pth``.
    :meth:`pool3` maps preprocessed inputs ``[B, 3, 299, 299]`` in ``[-1, 1]`` to ``[B, 2048]``;
    ``fc`` (1008 classes) is kept so that the weights file loads strictly but is not used for features.
    """

    num_features = 2048
    num_classes = 1008

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, c7=128)
        self.Mixed_6c = FIDInceptionC(768, c7=160)
        self.Mixed_6d = FIDInceptionC(768, c7=160)
        self.Mixed_6e = FIDInceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(self.num_features, self.num_classes)

    def pool3(self, x: Tensor) -> Tensor:
        """2048-d features (global average of ``Mixed_7c``) of preprocessed inputs ``[B, 3, 299, 299]`` in [-1, 1]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # 64 x 147 x 147
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 73 x 73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # 192 x 71 x 71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 35 x 35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):  # fmt: skip
            x = block(x)  # ends at 2048 x 8 x 8
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``[B, 1008]`` of preprocessed inputs."""
        return self.fc(self.pool3(x))


def load_inception_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read the FID Inception weights from a local ``.pth``/``.pt`` (plain state dict) or ``.safetensors`` file.

    Raises :class:`FileNotFoundError` if there is no such file and
    :class:`~scoresde.checkpoint.CheckpointError` if it is unreadable or not a dict of tensors.
    ``*.num_batches_tracked`` entries are dropped (training counters, unused here).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FID Inception weights file {path} not found: pass the path of a local copy of the standard "
            f"{WEIGHTS_FILE_NAME} (scoresde never downloads it)"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            state = load_file(str(path))
        elif suffix in (".pth", ".pt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"FID Inception weights file {path} must end in .pth, .pt or .safetensors, got {path.suffix!r}"
            )
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"FID Inception weights file {path} is unreadable or unsafe to load ({err})") from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(f"FID Inception weights file {path} is not a plain state dict (str -> tensor)")
    return {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}


class InceptionV3Features(FIDInceptionV3):
    """The FID Inception-v3 with its weights loaded from ``weights``: images in ``[0, 1]`` -> pool3 ``[B, 2048]``.

    ``weights`` is the path of a local ``pt_inception-2015-12-05-6726825d.pth`` (or a
    ``.safetensors`` copy of it); nothing is ever downloaded. The module is frozen
    (no gradients) and always in eval mode; ``forward`` runs under ``torch.no_grad``.
    """

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu") -> None:
        super().__init__()
        state = load_inception_state_dict(weights)
        load_weights_strict(self, state, what=f"FID Inception weights file {Path(weights).name}")
        self.requires_grad_(False)
        self.to(device)
        self.eval()

    def train(self, mode: bool = True) -> InceptionV3Features:
        """Stays in eval mode whatever ``mode`` is (the features are defined by the frozen network)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Pool3 features ``[B, 2048]`` (float32, on the module's device) of images ``[B, C, H, W]`` in ``[0, 1]``.

        ``C`` is 1 (grey, repeated to RGB) or 3. Images of any size are resized bilinearly
        to 299x299 with ``align_corners=False`` (pytorch-fid's choice) and mapped to ``[-1, 1]``.
        """
        check_unit_images(images)
        if images.shape[0] == 0:
            return torch.zeros(0, self.num_features, device=self.device)
        x = images.to(device=self.device, dtype=torch.float32)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.pool3(2.0 * x - 1.0)


def check_unit_images(images: Tensor) -> Tensor:
    """Raise a ValueError unless ``images`` is a float ``[B, C, H, W]`` tensor (``C`` 1 or 3) with values in [0, 1]."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor [B, C, H, W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype} (use x.float() / 255)")
    if images.numel():
        lo, hi = (float(v) for v in torch.aminmax(images.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("images contain NaN or inf")
        if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
            raise ValueError(
                f"images must have values in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                "(map [-1, 1] model outputs with scoresde.data.to_unit; divide 0..255 pixels by 255)"
            )
    return images


def inception_features(images: Tensor, weights: str | Path | InceptionV3Features, batch_size: int = 64,
                       device: torch.device | str = "cpu") -> Tensor:  # fmt: skip
    """FID Inception pool3 features ``[N, 2048]`` (float64, on the CPU) of images ``[N, C, H, W]`` in ``[0, 1]``.

    ``weights`` is the path of the local weights file, or an already loaded
    :class:`InceptionV3Features` (then ``device`` is ignored and its own device is used).
    Images go to the device ``batch_size`` at a time and features come back to the CPU,
    so memory stays bounded whatever ``N`` is.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_unit_images(images)
    model = weights if isinstance(weights, InceptionV3Features) else InceptionV3Features(weights, device=device)
    chunks = [model(images[lo : lo + batch_size]).double().cpu() for lo in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, model.num_features, dtype=torch.float64)
