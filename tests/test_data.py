"""Data loaders on small data the tests write, scaling and dequantization."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde import data


def test_digits_fixed_split():
    train, test = data.load_digits("train"), data.load_digits("test")
    assert len(train) == 1500 and len(test) == 297 and train.shape == (1, 8, 8)
    assert train.levels == 17 and int(train.images.max()) == 16
    again = data.load_digits("test")
    assert torch.equal(test.images, again.images)
    all_imgs = data.load_digits("all").images.reshape(1797, -1)
    joined = torch.cat([train.images, test.images]).reshape(1797, -1)
    assert sorted(map(tuple, joined.tolist())) == sorted(map(tuple, all_imgs.tolist()))


def test_scaling_round_trip_and_dequantization():
    k = torch.arange(17).reshape(1, 1, 1, 17).expand(3, 1, 1, 17)
    for rng in [(-1.0, 1.0), (0.0, 1.0)]:
        x = data.to_model(k, 17, rng, generator=torch.Generator().manual_seed(0))
        assert float(x.min()) >= rng[0] and float(x.max()) <= rng[1]
        assert torch.equal(data.to_levels(x, 17, rng), k.long())
        centres = data.to_model(k, 17, rng, dequantize=False)
        assert torch.equal(data.to_levels(centres, 17, rng), k.long())
    flipped = data.to_model(k, 17, dequantize=False, flip=True, generator=torch.Generator().manual_seed(0))
    rows = [torch.equal(f, data.to_model(k[:1], 17, dequantize=False)[0]) for f in flipped]
    assert rows.count(False) >= 1


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls, size in [("cats", (40, 30)), ("dogs", (20, 50)), ("dogs", (32, 32))]:
        folder = tmp_path / cls
        folder.mkdir(exist_ok=True)
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{len(os.listdir(folder))}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = data.load_image_folder(tmp_path, image_size=16)
    assert ds.images.shape == (3, 3, 16, 16) and ds.images.dtype == torch.uint8 and ds.levels == 256
    assert ds.labels.tolist() == [0, 1, 1]
    grey = data.load_image_folder(tmp_path, image_size=8, channels=1)
    assert grey.images.shape == (3, 1, 8, 8)
    with pytest.raises(FileNotFoundError):
        data.load_image_folder(tmp_path / "missing", 16)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="cannot read"):
        data.load_image_folder(tmp_path, 16)


def test_cifar10_reader(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    written = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        arr = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        written.append(arr)
        with open(base / name, "wb") as handle:
            pickle.dump({b"data": arr, b"labels": list(range(4))}, handle)
    train = data.load_cifar10(tmp_path, "train")
    test = data.load_cifar10(tmp_path, "test")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert torch.equal(test.images.reshape(4, -1), torch.from_numpy(written[-1]))
    assert train.labels.tolist() == list(range(4)) * 5

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(base / "test_batch", "wb") as handle:
        pickle.dump({b"data": Evil()}, handle)
    with pytest.raises(ValueError, match="refusing"):
        data.load_cifar10(tmp_path, "test")
    with pytest.raises(FileNotFoundError):
        data.load_cifar10(tmp_path / "nowhere", "train")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    data.write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", imgs)
    data.write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", np.arange(5, dtype=np.uint8))
    ds = data.load_mnist(tmp_path, "test")
    assert ds.images.shape == (5, 1, 28, 28) and torch.equal(ds.images[:, 0], torch.from_numpy(imgs))
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(FileNotFoundError):
        data.load_mnist(tmp_path, "train")
    truncated = raw / "bad-idx3-ubyte"
    truncated.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        data._read_idx(truncated)
    truncated.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="IDX"):
        data._read_idx(truncated)


@pytest.mark.parametrize("name", data.TOYS)
def test_toys(name):
    pts = data.toy_data(name, 1000, generator=torch.Generator().manual_seed(0))
    assert pts.shape == (1000, 2) and torch.isfinite(pts).all()
    assert 0.2 < float(pts.std()) < 5
    with pytest.raises(ValueError):
        data.toy_data("spiral", 10)


def test_from_image_dataset_adapts_torchvision_style_datasets():
    rng = np.random.default_rng(0)
    fake = [(Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)), i % 3) for i in range(4)]
    fake.append((rng.integers(0, 256, (10, 10), dtype=np.uint8), 2))  # arrays work too
    ds = data.from_image_dataset(fake, image_size=8, channels=3)
    assert ds.images.shape == (5, 3, 8, 8) and ds.labels.tolist() == [0, 1, 2, 0, 2]
    grey = data.from_image_dataset(fake, channels=1, limit=2)
    assert grey.images.shape == (2, 1, 12, 10)
    with pytest.raises(ValueError, match="empty"):
        data.from_image_dataset([])
