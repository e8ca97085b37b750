"""Image folders of any size: the memory-mapped cache of levels (decoded once, by worker processes), its reuse and
invalidation, the flat folder's split, the per-epoch seeded order, and training from it with exact resume."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde import data
from scoresde.build import load_dataset
from scoresde.checkpoint import load_checkpoint
from scoresde.config import load_config
from scoresde.train import train

ROOT = Path(__file__).parents[1]


def _folder(root: Path, n: int, size: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size + 2 * (i % 3), 3), dtype=np.uint8)).save(
            folder / f"{i:03d}.png"
        )
    return root


def test_the_cache_holds_exactly_the_decoded_folder(tmp_path):
    root = _folder(tmp_path / "images", 23)
    memory = data.load_image_folder(root, 8)
    cached = data.cached_image_folder(root, 8, cache_dir=tmp_path / "cache")
    assert torch.equal(cached.images, memory.images) and torch.equal(cached.labels, memory.labels)
    assert cached.checked and cached.images.dtype == torch.uint8
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".done", ".lock", ".npy"]
    assert json.loads(next((tmp_path / "cache").glob("*.done")).read_text())["images"] == 23
    parallel = data.cached_image_folder(root, 8, cache_dir=tmp_path / "parallel", workers=2)
    assert torch.equal(parallel.images, memory.images)  # worker processes decode the same levels


def test_the_cache_is_reused_and_a_changed_folder_is_decoded_again(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images", 12)
    cache = tmp_path / "cache"
    first = data.cached_image_folder(root, 8, cache_dir=cache)

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(data, "_decode_into", refuse)
        again = data.cached_image_folder(root, 8, cache_dir=cache)  # reused: nothing decoded
    assert torch.equal(again.images, first.images)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(root / "even" / "000.png")  # a changed file
    os.utime(root / "even" / "000.png", ns=(1, 1))
    changed = data.cached_image_folder(root, 8, cache_dir=cache)
    assert int(changed.images[0].max()) == 0 and torch.equal(changed.images[1:], first.images[1:])
    assert len(list(cache.glob("*.npy"))) == 2 and len(list(cache.glob("*.done"))) == 2
    assert not torch.equal(data.cached_image_folder(root, 6, cache_dir=cache).images[:, :, :1], first.images[:, :, :1])


def test_an_interrupted_decoding_is_started_over(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images", 6)
    cache = tmp_path / "cache"

    def interrupted(target, start, paths, image_size, channels):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(data, "_decode_into", interrupted)
        with pytest.raises(KeyboardInterrupt):
            data.cached_image_folder(root, 8, cache_dir=cache)
    assert not list(cache.glob("*.done"))
    assert torch.equal(
        data.cached_image_folder(root, 8, cache_dir=cache).images, data.load_image_folder(root, 8).images
    )


def test_the_flat_folder_split_is_the_same_from_memory_and_from_the_cache(tmp_path):
    root = _folder(tmp_path / "flat", 25)
    base = ["data.dataset=image_folder", f"data.root={root}", "data.channels=3", "data.image_size=8"]
    for split in ("train", "test"):
        memory = load_dataset(load_config(None, base), split)
        cached = load_dataset(load_config(None, [*base, "data.storage=memmap", f"data.cache={tmp_path / 'c'}"]), split)
        assert len(cached) == (2 if split == "test" else 23)
        assert torch.equal(cached.images, memory.images) and torch.equal(cached.labels, memory.labels)


def test_the_epoch_order_visits_every_image_once_per_epoch_and_depends_on_the_step_alone():
    order = data.EpochOrder(10, 4, seed=3)
    laid = torch.cat([order(step) for step in range(5)])  # 20 positions: two epochs
    assert sorted(laid[:10].tolist()) == list(range(10)) and sorted(laid[10:].tolist()) == list(range(10))
    assert not torch.equal(laid[:10], laid[10:])  # a fresh order each epoch
    assert torch.equal(data.EpochOrder(10, 4, seed=3)(3), laid[12:16])  # a resumed run draws the same batch
    assert not torch.equal(data.EpochOrder(10, 4, seed=4)(0), laid[:4])
    assert data.EpochOrder(3, 8, seed=0)(0).shape == (8,)  # a batch larger than the data spans epochs


def test_training_from_the_cache_resumes_exactly(tmp_path):
    root = _folder(tmp_path / "flat", 40)
    base = ["data.dataset=image_folder", f"data.root={root}", "data.channels=3", "data.image_size=8",
            "data.storage=memmap", f"data.cache={tmp_path / 'cache'}", "data.workers=2", "training.batch_size=8",
            "model.net={nf = 8, ch_mult = [1, 2], num_res_blocks = 1, attn_resolutions = [4]}",
            "training.snapshot_every=6", "training.log_every=3", "sampling.steps=4"]  # fmt: skip
    train(load_config(None, [*base, "training.n_iters=12"]), tmp_path / "straight", progress=False)
    train(load_config(None, [*base, "training.n_iters=6"]), tmp_path / "resumed", progress=False)
    train(load_config(None, [*base, "training.n_iters=12"]), tmp_path / "resumed", progress=False)
    a, _ = load_checkpoint(tmp_path / "straight" / "checkpoints")
    b, _ = load_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "ema.", "optim.")))
