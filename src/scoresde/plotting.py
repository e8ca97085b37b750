"""PNG output with Pillow only: density panels for 2-D samples, image grids and line plots.

Files are written atomically (to a temporary name, then renamed), so an interrupted
run never leaves a truncated picture behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# a perceptually ordered dark-to-bright ramp (anchors of viridis)
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
    dtype=np.float64,
)
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def _colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB with the ramp; zero stays white."""
    pos = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    rgb = _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac
    rgb[values <= 0] = _BACKGROUND
    return rgb.astype(np.uint8)


def density_panel(
    points: np.ndarray, extent: tuple[float, float, float, float], size: int = 220, bins: int = 110
) -> Image.Image:
    """A 2-D histogram of ``points`` ``[N, 2]`` over ``extent`` = (xmin, xmax, ymin, ymax), log-scaled."""
    xmin, xmax, ymin, ymax = extent
    pts = np.asarray(points, dtype=np.float64)
    hist, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=bins, range=[[ymin, ymax], [xmin, xmax]])
    hist = np.flipud(hist)
    scaled = np.log1p(hist) / max(np.log1p(hist.max()), 1e-12)
    return Image.fromarray(_colormap(scaled)).resize((size, size), Image.NEAREST)


def save_scatter_grid(
    panels: Sequence[tuple[str, np.ndarray | torch.Tensor]],
    path: str | Path,
    cols: int = 4,
    extent: tuple[float, float, float, float] | None = None,
    size: int = 220,
) -> Path:
    """Save titled density panels of 2-D point clouds in a grid; returns the path."""
    arrays = [(title, _as_numpy(pts)) for title, pts in panels]
    if extent is None:
        allpts = np.concatenate([a for _, a in arrays])
        lo, hi = np.percentile(allpts, 0.5, axis=0), np.percentile(allpts, 99.5, axis=0)
        pad = 0.15 * (hi - lo)
        extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    font = ImageFont.load_default()
    title_h = 16
    rows = (len(arrays) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (size + 8) + 8, rows * (size + title_h + 8) + 8), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, (title, pts) in enumerate(arrays):
        r, c = divmod(i, cols)
        x0, y0 = 8 + c * (size + 8), 8 + r * (size + title_h + 8)
        draw.text((x0, y0), title[:40], fill=_TEXT, font=font)
        canvas.paste(density_panel(pts, extent, size), (x0, y0 + title_h))
        draw.rectangle([x0, y0 + title_h, x0 + size - 1, y0 + title_h + size - 1], outline=(180, 180, 180))
    return save_png(canvas, path)


GRID_LINE = 0.5
"""The grey of the lines between the images of a grid: neither a white nor a black sample hides in it."""


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Save images ``[B, C, H, W]`` with values in ``[0, 1]`` as one grid PNG, separated by mid-grey lines.

    ``scale`` is the nearest-neighbour upscaling (default: tiles of about 64 pixels).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape [B, 1 or 3, H, W], got {tuple(images.shape)}")
    imgs = images.detach().float().clamp(0, 1).cpu().numpy()
    b, ch, h, w = imgs.shape
    nrow = nrow or int(np.ceil(np.sqrt(b)))
    rows = (b + nrow - 1) // nrow
    pad = 1
    grid = np.full((ch, rows * (h + pad) + pad, nrow * (w + pad) + pad), GRID_LINE, dtype=np.float32)
    for i in range(b):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = imgs[i]
    scale = max(1, 64 // max(h, w)) if scale is None else scale
    pixels = (grid * 255).round().astype(np.uint8)
    img = Image.fromarray(pixels[0] if ch == 1 else pixels.transpose(1, 2, 0))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return save_png(img, path)


def save_line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (640, 400),
    log_y: bool = False,
) -> Path:
    """Save a simple line plot of named ``(x, y)`` series with axes, ticks and a legend."""
    width, height = size
    left, right, top, bottom = 70, 20, 30, 50
    font = ImageFont.load_default()
    canvas = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    xs = np.concatenate([np.asarray(x, dtype=np.float64) for x, _ in series.values()])
    ys = np.concatenate([np.asarray(y, dtype=np.float64) for _, y in series.values()])
    ys_t = np.log10(np.clip(ys, 1e-12, None)) if log_y else ys
    finite = np.isfinite(ys_t)
    xmin, xmax = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min()) + 1
    ymin, ymax = float(ys_t[finite].min()), float(ys_t[finite].max())
    if ymax <= ymin:
        ymax = ymin + 1
    pw, ph = width - left - right, height - top - bottom

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - xmin) / (xmax - xmin) * pw, top + (1 - (y - ymin) / (ymax - ymin)) * ph

    draw.rectangle([left, top, left + pw, top + ph], outline=(120, 120, 120))
    for k in range(5):
        fx, fy = xmin + k * (xmax - xmin) / 4, ymin + k * (ymax - ymin) / 4
        px, _ = to_px(fx, ymin)
        _, py = to_px(xmin, fy)
        draw.line([px, top + ph, px, top + ph + 4], fill=(120, 120, 120))
        draw.text((px - 15, top + ph + 6), f"{fx:.4g}", fill=_TEXT, font=font)
        draw.line([left - 4, py, left, py], fill=(120, 120, 120))
        label = f"{10**fy:.3g}" if log_y else f"{fy:.4g}"
        draw.text((4, py - 6), label, fill=_TEXT, font=font)
    colors = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    for i, (name, (x, y)) in enumerate(series.items()):
        color = colors[i % len(colors)]
        yv = np.asarray(y, dtype=np.float64)
        yv = np.log10(np.clip(yv, 1e-12, None)) if log_y else yv
        pts = [to_px(a, b) for a, b in zip(np.asarray(x, dtype=np.float64), yv, strict=True) if np.isfinite(b)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        draw.text((left + 10, top + 6 + 14 * i), name, fill=color, font=font)
    draw.text((left, 8), title, fill=_TEXT, font=font)
    draw.text((left + pw // 2 - 20, height - 18), xlabel, fill=_TEXT, font=font)
    draw.text((4, top - 22), ylabel, fill=_TEXT, font=font)
    return save_png(canvas, path)


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(binary_handle)`` on a temporary file next to ``path``, then rename it into place.

    A crash mid-write leaves the previous file (if any) untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        name_path(err, path)
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        shareable(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            name_path(err, path)
        raise
    return path


def shareable(path: str | Path) -> None:
    """Give a temporary file (``mkstemp``: mode 0600) the mode a plain ``open`` would, ``0666`` less the umask, so
    that others may read what we publish as they may read any other file of ours."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def name_path(err: OSError, path: Path) -> None:
    """Attach ``path`` to a system OSError raised without one (e.g. ENOSPC from a write), for the error message (an
    error of ours, a message without an errno, already names what it is about)."""
    if err.filename is None and err.strerror is not None:
        err.filename = str(path)


def check_writable_dir(path: str | Path, what: str = "directory") -> Path:
    """Raise a one-line ``OSError`` unless ``path`` is a writable directory or can be created as one.

    Nothing is created: the nearest existing ancestor must be a directory this process may write to.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} exists and is not a directory")
    base = path
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise NotADirectoryError(f"cannot create {what} {path}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        where = f"{what} {path} is" if base == path else f"cannot create {what} {path}: {base} is"
        raise PermissionError(f"{where} not writable")
    return path


def check_output_file(path: str | Path, suffixes: Sequence[str], what: str = "output") -> Path:
    """Raise a one-line error unless ``path`` has one of ``suffixes`` and can be written (see :func:`atomic_write`)."""
    path = Path(path)
    if path.suffix not in suffixes:
        raise ValueError(f"{what} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory")
    check_writable_dir(path.parent, f"the folder of {what}")
    return path


def _as_numpy(points: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().double().numpy()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape [N, 2], got {points.shape}")
    return points[np.isfinite(points).all(1)]
