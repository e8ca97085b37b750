"""Train the digits classifier whose features score samples (FD, KID, class histogram).

Trains :class:`scoresde.features.DigitsClassifier` on the 1,500 training digits only (the
297 test digits are never seen), with a fixed seed, on dequantized images (k + U)/17 and
random one-pixel shifts, so that it sees continuous values like a sampler's output.
Writes the weights and their metadata (seed, epochs, test accuracy) as safetensors:

    python scripts/train_digits_classifier.py                 # -> src/scoresde/assets/digits_classifier.safetensors
    python scripts/train_digits_classifier.py --out /tmp/c.safetensors --epochs 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scoresde.checkpoint import save_checkpoint
from scoresde.data import load_digits
from scoresde.features import DigitsClassifier

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "scoresde" / "assets" / "digits_classifier.safetensors"


def shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel in each direction (zero padding)."""
    padded = F.pad(images, (1, 1, 1, 1))
    dx = torch.randint(0, 3, (images.shape[0],), generator=generator)
    dy = torch.randint(0, 3, (images.shape[0],), generator=generator)
    rows = torch.arange(8)[None, :] + dy[:, None]
    cols = torch.arange(8)[None, :] + dx[:, None]
    batch = torch.arange(images.shape[0])[:, None, None]
    return padded[:, 0][batch, rows[:, :, None], cols[:, None, :]][:, None]


def accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).double().mean())


def train_classifier(epochs: int = 60, seed: int = 0, batch_size: int = 100, lr: float = 2e-3) -> tuple:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train, test = load_digits("train"), load_digits("test")
    levels = train.levels
    x_test = (test.images.double() + 0.5) / levels
    model = DigitsClassifier().double()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = len(train)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            k = train.images[idx].double()
            x = shift((k + torch.rand(k.shape, generator=gen, dtype=torch.float64)) / levels, gen)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    x_train = (train.images.double() + 0.5) / levels
    train_acc, test_acc = accuracy(model, x_train, train.labels), accuracy(model, x_test, test.labels)
    return model.float(), train_acc, test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    model, train_acc, test_acc = train_classifier(args.epochs, args.seed)
    meta = {"format": "scoresde-digits-classifier-1", "seed": args.seed, "epochs": args.epochs,
            "train_accuracy": train_acc, "test_accuracy": test_acc, "num_features": model.num_features,
            "trained_on": "scikit-learn digits, scoresde training split (1500 images)",
            "script": "scripts/train_digits_classifier.py"}  # fmt: skip
    save_checkpoint(args.out, dict(model.state_dict()), meta)
    args.out.with_suffix(".json").unlink(missing_ok=True)  # the metadata lives in the file's header
    print(f"train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f} "
          f"({time.perf_counter() - start:.0f} s) -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
