"""Datasets: integer-level images (digits, image folders, CIFAR-10, MNIST) and 2-D toys.

Images are kept as integer levels ``k in {0, ..., L-1}`` (``L = 256`` for 8-bit images,
17 for scikit-learn's digits) and mapped to the model's range in one place:

* training and evaluation both use ``u = (k + U) / L`` with ``U ~ U[0, 1)`` (uniform
  dequantization that respects ``L``; with ``dequantize=False`` the bin centres
  ``(k + 1/2) / L``), then ``x = lo + (hi - lo) u`` for ``data_range = (lo, hi)``;
* samples map back with :func:`to_levels` (integer levels), :func:`to_picture` (pictures: the levels shown in
  [0, 1]) and :func:`to_unit` (the continuous values in [0, 1]).

Nothing is downloaded: the readers take files already on disk, in the layout torchvision
uses (``cifar-10-batches-py/``, ``MNIST/raw/``), so a folder torchvision filled works as is.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._checks import rand_like

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TOYS = ("mixture", "moons", "checkerboard", "swiss_roll")
TOY_CLASSES: dict[str, int] = {"mixture": 3, "moons": 2}
"""Toys with class labels, and their number of classes (mixture: the component; moons: upper 1, lower 0)."""
DIGITS_TEST_SIZE = 297


@dataclass
class ImageData:
    """Images as integer levels ``images`` (``[N, C, H, W]``, values ``0 .. levels-1``) and optional labels."""

    images: Tensor
    levels: int
    labels: Tensor | None = None
    checked: bool = False  # the levels are known to be below ``levels`` (a memory-mapped cache: not read again)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must have shape [N, C, H, W], got {tuple(self.images.shape)}")
        if not self.checked and self.images.numel() and int(self.images.max()) >= self.levels:
            raise ValueError(f"image values must be below levels={self.levels}")
        if self.labels is not None and tuple(self.labels.shape) != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images come with labels of shape {tuple(self.labels.shape)}; "
                             "each image needs exactly one label (files of two different sets?)")  # fmt: skip

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def data_levels(dataset: str) -> int:
    """Number of grey levels of a named image dataset: 17 for the digits, 256 for 8-bit images."""
    return 17 if dataset == "digits" else 256


# -- scaling --------------------------------------------------------------------------------
def to_model(
    levels_x: Tensor,
    levels: int,
    data_range: tuple[float, float] = (-1.0, 1.0),
    dequantize: bool = True,
    generator: torch.Generator | None = None,
    flip: bool = False,
) -> Tensor:
    """Integer levels to model inputs: ``lo + (hi - lo) (k + U) / L`` (see the module docstring).

    ``levels_x`` must hold integers ``0 .. levels - 1`` (checked without a host sync on an accelerator, where a
    violation fails the next synchronising call). ``flip`` mirrors a random half of the images horizontally.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    k = levels_x.to(torch.get_default_dtype())
    fits = ((k >= 0) & (k <= levels - 1) & (k == k.round())).all()
    if k.device.type != "cpu":
        torch._assert_async(fits, f"to_model: levels_x must hold integers 0 to {levels - 1}")
    elif not bool(fits):
        raise ValueError(f"levels_x must hold integer levels 0 to {levels - 1} (levels={levels}), got values in "
                         f"[{float(k.min()):g}, {float(k.max()):g}]")  # fmt: skip
    u = (k + rand_like(k, generator)) / levels if dequantize else (k + 0.5) / levels
    if flip:
        mask = rand_like(torch.zeros(k.shape[0], device=k.device), generator) < 0.5
        u = torch.where(mask[:, None, None, None], u.flip(-1), u)
    lo, hi = data_range
    return lo + (hi - lo) * u


def to_unit(x: Tensor, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Model outputs back to ``[0, 1]`` (clamped), for pictures."""
    lo, hi = data_range
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def to_levels(x: Tensor, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Model outputs back to integer levels ``floor(u L)`` clamped to ``[0, L-1]``."""
    return torch.floor(to_unit(x, data_range) * levels).clamp(0, levels - 1).to(torch.int64)


def to_picture(x: Tensor, levels: int, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Model outputs as the images they stand for: quantized to the data's ``levels`` (:func:`to_levels`) and shown
    in ``[0, 1]`` as ``k / (L - 1)``, level 0 black and level ``L - 1`` white, as the real images are."""
    return to_levels(x, levels, data_range).to(torch.float32) / (levels - 1)


# -- the embedded default: scikit-learn's digits --------------------------------------------
def load_digits(split: str = "train") -> ImageData:
    """scikit-learn's bundled 8x8 digits (1797 images, 17 grey levels, no download).

    The split is fixed: a permutation with seed 0; the first 297 images are ``"test"``,
    the other 1500 ``"train"``; ``"all"`` returns every image in the original order.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    if split == "all":
        return ImageData(images, 17, labels)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    if split == "test":
        idx = order[:DIGITS_TEST_SIZE]
    elif split == "train":
        idx = order[DIGITS_TEST_SIZE:]
    else:
        raise ValueError(f"unknown split {split!r}; choose 'train', 'test' or 'all'")
    return ImageData(images[idx], 17, labels[idx])


def _to_array(img, image_size: int | None, channels: int) -> np.ndarray:
    """A PIL image as uint8 ``[H, W(, C)]``: converted to RGB or grey, the shorter side resized to
    ``image_size`` (bicubic) and centre-cropped to a square (no resizing when ``image_size`` is None)."""
    from PIL import Image

    img = img.convert("RGB" if channels == 3 else "L")
    if image_size is not None:
        scale = image_size / min(img.size)
        size = (max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale)))
        img = img.resize(size, Image.BICUBIC)
        left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
    return np.array(img, dtype=np.uint8)


# -- image folders ----------------------------------------------------------------------------
def image_files(root: Path) -> tuple[list[Path], list[str]]:
    """The image files under ``root`` in path order, and the sorted sub-folder names (the classes)."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files, sorted({p.parent.relative_to(root).as_posix() for p in files})


def _read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One file as uint8 ``[C, H, W]`` levels (resized and centre-cropped)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = _to_array(img, image_size, channels)
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _labels(root: Path, files: list[Path], classes: list[str]) -> Tensor:
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[p.parent.relative_to(root).as_posix()] for p in files])


def load_image_folder(root: str | Path, image_size: int, channels: int = 3) -> ImageData:
    """Every image under ``root`` (recursively), resized so the shorter side is ``image_size``
    and centre-cropped; ``channels`` 3 (RGB) or 1 (grey). Labels are sub-folder indices.
    Decoded into memory; :func:`cached_image_folder` is the memory-mapped reader for folders of any size."""
    root = Path(root)
    files, classes = image_files(root)
    images = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(files):
        images[i] = _read_image(path, image_size, channels)
    return ImageData(torch.from_numpy(images), 256, _labels(root, files, classes))


def default_cache_dir() -> Path:
    """Where decoded image folders are cached: ``$XDG_CACHE_HOME/scoresde/image_folders`` (default
    ``~/.cache/scoresde/image_folders``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scoresde" / "image_folders"


def _decode_into(target: str, start: int, paths: list[Path], image_size: int, channels: int) -> None:
    """A worker: decode ``paths`` into rows ``start ..`` of the cache file ``target``."""
    levels = np.load(target, mmap_mode="r+")
    for i, path in enumerate(paths):
        levels[start + i] = _read_image(path, image_size, channels)
    levels.flush()


DECODE_CHUNK = 256
"""Images per task of the decoding workers."""


def cached_image_folder(root: str | Path, image_size: int, channels: int = 3, cache_dir: str | Path | None = None,
                        workers: int = 0, keep: Callable[[int], bool] | None = None) -> ImageData:  # fmt: skip
    """The images of :func:`load_image_folder`, decoded once into a cache file of uint8 levels and then read
    memory-mapped: memory stays bounded for any number of images (the operating system pages the rows a batch
    touches in and out).

    The cache (``cache_dir``, default :func:`default_cache_dir`) is named by a hash of the folder's path, every
    file's relative path, size and modification time, ``image_size`` and ``channels``, so a changed folder is
    decoded again and a second run (or another process of a ``torchrun`` launch, which waits on a lock) reuses
    it. ``workers`` processes decode it (0: this process); the levels file is written first and marked complete
    last, so an interrupted decoding is started over, never read half-done. ``keep(i)``: cache only the files
    whose index ``i`` in path order it accepts (a split of a flat folder); labels still index every sub-folder.
    """
    import hashlib
    import json

    root = Path(root).resolve()
    files, classes = image_files(root)
    if keep is not None:
        files = [path for i, path in enumerate(files) if keep(i)]
        if not files:
            raise ValueError(f"no image of {root} is in the requested split")
    listing = [(p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([str(root), image_size, channels, listing]).encode()).hexdigest()[:24]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    levels_path, done = cache / f"{key}.levels.npy", cache / f"{key}.done"
    with _exclusive(cache / f"{key}.lock"):
        if not done.exists():
            shape = (len(files), channels, image_size, image_size)
            np.lib.format.open_memmap(levels_path, mode="w+", dtype=np.uint8, shape=shape).flush()
            chunks = [(i, files[i : i + DECODE_CHUNK]) for i in range(0, len(files), DECODE_CHUNK)]
            if workers > 0:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(max_workers=workers) as pool:
                    jobs = [pool.submit(_decode_into, str(levels_path), i, chunk, image_size, channels)
                            for i, chunk in chunks]  # fmt: skip
                    for job in jobs:
                        job.result()
            else:
                for i, chunk in chunks:
                    _decode_into(str(levels_path), i, chunk, image_size, channels)
            done.write_text(json.dumps({"root": str(root), "images": len(files), "shape": list(shape)}))
    images = torch.from_numpy(np.load(levels_path, mmap_mode="c"))  # copy-on-write: never written back
    return ImageData(images, 256, _labels(root, files, classes), checked=True)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (waiting for another process that holds it)."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_image_file(path: str | Path, image_size: int, channels: int = 3) -> ImageData:
    """One image file as :class:`ImageData` (one image, 256 levels), resized and centre-cropped as
    :func:`load_image_folder` does."""
    return ImageData(torch.from_numpy(_read_image(Path(path), image_size, channels)[None]), 256)


def from_image_dataset(
    dataset, image_size: int | None = None, channels: int = 3, limit: int | None = None
) -> ImageData:
    """Convert any map-style dataset of ``(image, label)`` pairs (e.g. a torchvision dataset built
    with ``download=False``; images as PIL images or uint8 arrays ``[H, W(, C)]``) to :class:`ImageData`.

    Use this for the datasets torchvision knows beyond CIFAR-10 and MNIST (``pip install
    scoresde[vision]``); ``image_size`` resizes and centre-crops as :func:`load_image_folder`.
    """
    from PIL import Image

    images, labels = [], []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        item = dataset[i]
        img, label = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, -1)
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        arr = _to_array(img, image_size, channels)
        images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
        labels.append(int(label))
    if not images:
        raise ValueError("the dataset is empty")
    return ImageData(torch.from_numpy(np.stack(images)), 256, torch.tensor(labels))


# -- CIFAR-10 and MNIST files (torchvision's layout; never downloaded) -----------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's batch dictionaries and nothing else (no arbitrary code)."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")


def load_cifar10(root: str | Path, split: str = "train") -> ImageData:
    """CIFAR-10 from the python batches in ``root/cifar-10-batches-py`` (or ``root`` itself)."""
    base = Path(root)
    if (base / "cifar-10-batches-py").is_dir():
        base = base / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    images, labels = [], []
    for name in names:
        path = base / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 file {path} not found (download it once, e.g. with torchvision)")
        with open(path, "rb") as handle:
            try:
                batch = _ArrayUnpickler(handle, encoding="bytes").load()
            except (pickle.UnpicklingError, EOFError, ValueError) as err:
                raise ValueError(f"{path} is not a valid CIFAR-10 batch: {err}") from err
        data = batch.get(b"data", batch.get("data"))
        target = batch.get(b"labels", batch.get("labels"))
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(target, dtype=np.int64))
    return ImageData(torch.from_numpy(np.concatenate(images)), 256, torch.from_numpy(np.concatenate(labels)))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def load_mnist(root: str | Path, split: str = "train") -> ImageData:
    """MNIST from the IDX files in ``root/MNIST/raw`` (or ``root``), gzipped or not."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    base = Path(root)
    if (base / "MNIST" / "raw").is_dir():
        base = base / "MNIST" / "raw"
    prefix = "train" if split == "train" else "t10k"

    def find(stem: str) -> Path:
        for candidate in (base / stem, base / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"MNIST file {base / stem}[.gz] not found (download it once, e.g. with torchvision)")

    images = _read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    return ImageData(torch.from_numpy(images.copy())[:, None], 256, torch.from_numpy(labels.astype(np.int64)))


# -- 2-D toys ----------------------------------------------------------------------------------
def toy_data(
    name: str, n: int, generator: torch.Generator | None = None, return_labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` points ``[n, 2]`` of a 2-D toy: ``mixture`` (the demo mixture), ``moons``,
    ``checkerboard`` or ``swiss_roll``, scaled to roughly unit spread.

    ``return_labels`` also returns the ``[n]`` class labels of a toy in :data:`TOY_CLASSES`
    (the same points as without it).
    """
    if return_labels and name not in TOY_CLASSES:
        raise ValueError(f"toy dataset {name!r} has no class labels; these do: {', '.join(TOY_CLASSES)}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    labels = None
    if name == "mixture":
        from .toy import demo_mixture

        pts, labels = demo_mixture().sample(n, generator=g, return_labels=True)
    elif name == "moons":
        upper = torch.rand(n, generator=g) < 0.5
        angle = torch.rand(n, generator=g) * torch.pi
        x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
        y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
        pts = (torch.stack([x - 0.5, y - 0.25], 1) + 0.05 * torch.randn(n, 2, generator=g)) * 1.5
        labels = upper.to(torch.int64)
    elif name == "checkerboard":
        x1 = torch.rand(n, generator=g) * 4 - 2
        x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g).float() * 2
        x2 = x2 + (torch.floor(x1) % 2)
        pts = torch.stack([x1, x2], 1)
    elif name == "swiss_roll":
        t = 1.5 * torch.pi * (1 + 2 * torch.rand(n, generator=g))
        pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5.0
        pts = pts + 0.05 * torch.randn(n, 2, generator=g)
    else:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {list(TOYS)}")
    return (pts, labels) if return_labels else pts


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (MNIST's format), gzipped when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb") as handle:
            handle.write(payload)
        payload = buf.getvalue()
    path.write_bytes(payload)


class EpochOrder:
    """``order(step) -> [batch_size]`` indices of step ``step``'s batch when every epoch visits each of the ``n``
    images once, in a fresh order: epoch ``e`` is the permutation drawn from a generator seeded with
    ``seed * 1_000_003 + e``, and step ``s`` takes positions ``s * batch_size ...`` of the epochs laid end to end.

    A function of the step alone (no state to checkpoint), so a resumed run draws exactly the batches the
    uninterrupted one would. Only the current epoch's permutation is held (``8 n`` bytes).
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1:
            raise ValueError("an epoch order needs at least one image")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm

    def __call__(self, step: int) -> Tensor:
        parts, position, need = [], step * self.batch_size, self.batch_size
        while need:
            epoch, offset = divmod(position, self.n)
            part = self._permutation(epoch)[offset : offset + need]
            parts.append(part)
            position, need = position + len(part), need - len(part)
        return torch.cat(parts)
