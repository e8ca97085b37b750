r"""Feature spaces for sample-quality metrics.

* :class:`DigitsClassifier`: a small convolutional classifier of the 8x8 digits, trained on
  the training split only by ``scripts/train_digits_classifier.py`` (fixed seed) and shipped
  inside the package as ``assets/digits_classifier.safetensors``. Its 64-d penultimate
  activations are the feature space of the digits Fréchet distance and KID, and its class
  probabilities give the class histogram and confidence of a sample set.
* Inception-v3 (the standard FID network) from a weights file the user has locally:
  :mod:`scoresde.inception`.

Every feature extractor takes images ``[B, C, H, W]`` with values in ``[0, 1]``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

DIGITS_WEIGHTS = "digits_classifier.safetensors"


class DigitsClassifier(nn.Module):
    """Conv(1-32) - Conv(32-64) - pool - Conv(64-64) - pool - Linear(256-64) = features - Linear(64-10).

    Input: ``[B, 1, 8, 8]`` images in ``[0, 1]`` (mapped to ``[-1, 1]`` inside).
    """

    num_features = 64
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(256, self.num_features),
            nn.SiLU(),
        )
        self.head = nn.Linear(self.num_features, self.num_classes)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate activations ``[B, 64]``."""
        return self.body(2.0 * images - 1.0)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``[B, 10]``."""
        return self.head(self.features(images))


def check_images(images: Tensor, channels: int | None = None, size: int | None = None) -> Tensor:
    """Validate ``[B, C, H, W]`` float images in ``[0, 1]`` for a feature extractor."""
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [B, C, H, W] with values in [0, 1], got {got}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"images must have {channels} channel(s), got {images.shape[1]}")
    if size is not None and tuple(images.shape[2:]) != (size, size):
        raise ValueError(f"images must be {size}x{size}, got {tuple(images.shape[2:])}")
    if images.numel() and not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or inf")
    if images.numel() and (float(images.min()) < -1e-3 or float(images.max()) > 1 + 1e-3):
        raise ValueError("images must have values in [0, 1] (map model outputs with scoresde.data.to_unit)")
    return images


def load_digits_classifier(path: str | Path | None = None, device: torch.device | str = "cpu") -> DigitsClassifier:
    """The shipped digits classifier (or one saved by the training script at ``path``), in eval mode."""
    from .checkpoint import load_checkpoint, load_weights_strict

    if path is None:
        path = Path(str(resources.files("scoresde") / "assets" / DIGITS_WEIGHTS))
    tensors, _ = load_checkpoint(path)
    model = DigitsClassifier()
    load_weights_strict(model, tensors, what="digits classifier file")
    return model.to(device).eval()


def digits_classifier_info(path: str | Path | None = None) -> dict:
    """The metadata stored with the classifier (seed, epochs, test accuracy, ...)."""
    from .checkpoint import load_checkpoint

    if path is None:
        path = Path(str(resources.files("scoresde") / "assets" / DIGITS_WEIGHTS))
    return load_checkpoint(path)[1]


@torch.no_grad()
def digits_features(
    images: Tensor, model: DigitsClassifier | None = None, batch_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """Features ``[N, 64]`` and class probabilities ``[N, 10]`` of digits images ``[N, 1, 8, 8]`` in ``[0, 1]``."""
    check_images(images, channels=1, size=8)
    model = load_digits_classifier() if model is None else model
    device = next(model.parameters()).device
    feats, probs = [], []
    for lo in range(0, images.shape[0], batch_size):
        f = model.features(images[lo : lo + batch_size].to(device, torch.float32))
        feats.append(f.double().cpu())
        probs.append(torch.softmax(model.head(f), dim=1).double().cpu())
    if not feats:
        return torch.zeros(0, model.num_features, dtype=torch.float64), torch.zeros(0, 10, dtype=torch.float64)
    return torch.cat(feats), torch.cat(probs)
