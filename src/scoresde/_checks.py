"""Small shared helpers: time broadcasting, input validation and random draws.

Every public function of the library funnels its inputs through these helpers so
that bad input fails early with a message that names the argument, instead of a
traceback from deep inside torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from numbers import Integral

import torch
from torch import Tensor

from .noise import SampleNoise

TimeLike = float | int | Tensor


def check_data(x: Tensor, name: str = "x") -> Tensor:
    """Raise unless ``x`` is a floating-point tensor with a batch dimension (shapes and dtypes only, no sync).

    Integer or boolean data would silently truncate every time and coefficient cast
    to its dtype, so it is refused rather than promoted.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype} (convert it, e.g. {name}.float())")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got a tensor of shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no samples (an empty batch of shape {tuple(x.shape)})")
    return x


def check_like(v: Tensor, x: Tensor, name: str, x_name: str = "x") -> Tensor:
    """Validate a tensor that must have ``x``'s shape (e.g. given noise); return it on ``x``'s device and dtype."""
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped like {x_name}, got {type(v).__name__}")
    if v.shape != x.shape:
        raise ValueError(f"{name} must have the shape of {x_name} {tuple(x.shape)}, got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {v.dtype}")
    return v.to(device=x.device, dtype=x.dtype)


def check_output(out: object, x: Tensor, what: str) -> Tensor:
    """Raise unless a function's output ``out`` is a tensor shaped like its input ``x`` (shapes only, no sync)."""
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what} must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    return out


def batch_time(t: TimeLike, x: Tensor, T: float | None = None, name: str = "t") -> Tensor:
    """Return ``t`` as a 1-D tensor of shape ``[B]`` on ``x``'s device and dtype.

    ``x`` must be a floating-point tensor (see :func:`check_data`). A Python number or
    a 0-d tensor is broadcast to the batch. A 1-D tensor must have exactly
    ``B = x.shape[0]`` entries; an integer time tensor is converted to ``x``'s dtype.
    When ``T`` is given every entry must lie in ``[0, T]``.
    """
    check_data(x)
    batch = x.shape[0]
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(t, (int, float)):
        try:
            t = float(t)
        except OverflowError:
            raise ValueError(f"{name} is too large ({name} must lie in [0, T={T}])") from None
        if not math.isfinite(t) or (T is not None and not 0.0 <= t <= T):
            raise ValueError(f"{name}={t} is outside [0, T={T}]" if T is not None else f"{name}={t} is not finite")
        return torch.full((batch,), t, dtype=x.dtype, device=x.device)
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a real (float or integer) tensor, got {t.dtype}")
    if t.ndim == 0:
        t = t.expand(batch)
    elif t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must be a float, a 0-d tensor or a 1-D tensor of shape [B]=[{batch}], got shape {tuple(t.shape)}"
        )
    t = t.to(device=x.device, dtype=x.dtype)
    if T is not None:
        slack = 4 * torch.finfo(t.dtype).eps * max(1.0, T)  # T rounded to the dtype
        if t.device.type != "cpu":
            # no host sync on an accelerator (this runs at every network call of a sampler): the
            # check runs on the device and a violation fails the next synchronising call
            inside = ((t.detach() >= 0.0) & (t.detach() <= T + slack)).all()
            torch._assert_async(inside, f"{name} must lie in [0, T={T}]")
            return t
        if t.numel() == 0:
            return t
        lo, hi = (float(v) for v in torch.aminmax(t.detach()))
        if not (lo >= 0.0 and hi <= T + slack):
            raise ValueError(f"{name} must lie in [0, T={T}], got values in [{lo:g}, {hi:g}]")
    return t


def expand_to(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample vector ``[B]`` so it broadcasts against ``x`` of shape ``[B, ...]``."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def check_finite(x: Tensor, what: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} contains {n_bad} non-finite value(s) (NaN or inf)")


# Values beyond the data range by more than this share of its width are not data: for [-1, 1], beyond +-1.5.
RANGE_SLACK = 0.25


INPUT_SLACK = 0.5
"""Inputs to inpaint and colorize may overshoot the data range by this share of its width (a model's samples do);
beyond it they are not model-space data (pixels, levels): for [-1, 1], beyond +-2."""


def range_bounds(data_range: Sequence[float], slack: float = RANGE_SLACK) -> tuple[float, float]:
    """``data_range`` widened by ``slack`` of its width on each side (it must be increasing)."""
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be two numbers (lo, hi), got {data_range!r:.60}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be two finite numbers (lo, hi) with lo < hi, got {tuple(data_range)}")
    margin = slack * (hi - lo)
    return lo - margin, hi + margin


def check_in_range(x: Tensor, data_range: Sequence[float] | None, name: str) -> Tensor:
    """Raise unless every value of ``x`` lies in the model's ``data_range`` (with :data:`INPUT_SLACK`); ``None``: no
    check. One host sync."""
    if data_range is None:
        return x
    lo, hi = range_bounds(data_range, INPUT_SLACK)
    small, big = (float(v) for v in torch.aminmax(x.detach()))
    if small < lo or big > hi:
        raise ValueError(f"{name} has values in [{small:.4g}, {big:.4g}], outside the model's data range "
                         f"{tuple(float(v) for v in data_range)}: give inputs in model space (the range the data "
                         "were mapped onto), not levels or pixels")  # fmt: skip
    return x


def memory_limit(device: torch.device | str | None = None) -> int:
    """Bytes one tensor may take on ``device``: the GPU's total memory, else the machine's physical memory."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no check
        return 2**62


def check_memory(numel: int, dtype: torch.dtype, what: str, device: torch.device | str | None = None) -> None:
    """Raise before allocating when ``numel`` values of ``dtype`` would not fit in the memory of ``device``."""
    need = int(numel) * torch.empty((), dtype=dtype).element_size()
    have = memory_limit(device)
    if need > have:
        where = torch.device(device or "cpu").type
        raise ValueError(f"{what} would take {need / 2**30:.3g} GiB, more than the {have / 2**30:.3g} GiB of memory "
                         f"of the {where}: ask for fewer (or draw them in several runs)")  # fmt: skip


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Validate a sample shape ``(B, ...)`` of positive integers (a float such as 2.7 is an error, not 2)."""
    try:
        sizes = tuple(shape)
    except TypeError as err:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from err
    if any(isinstance(s, bool) or not isinstance(s, (int, Integral)) for s in sizes):
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}")
    shape = tuple(int(s) for s in sizes)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (batch, *data_dims) with positive sizes, got {shape}")
    return shape


MIN_EPS = 1e-8
"""The smallest end time of a reverse integration, as a share of ``T``: below it the kernel's noise level and the
solvers' log-SNR steps lose every digit of float32."""


def check_eps(eps: float, T: float, name: str = "eps") -> float:
    """Validate the end time ``eps`` of a reverse-time integration: a number with ``MIN_EPS * T <= eps < T``."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(eps).__name__} {eps!r:.40}")
    eps = float(eps)
    if not MIN_EPS * T <= eps < T:
        raise ValueError(f"{name} must satisfy {MIN_EPS * T:g} <= {name} < T={T}, got {eps}")
    return eps


def check_count(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int; a one-line error naming ``name`` unless it is an integer (or an integral float such as
    3.0; not a bool, not 2.5, not inf) in ``[minimum, maximum]``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, Integral)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f" from {minimum} to {maximum:,}" if maximum is not None else f" >= {minimum}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r:.40}")
    return int(value)


def check_generator(generator: object) -> None:
    """Raise unless ``generator`` is ``None``, a ``torch.Generator`` or a :class:`scoresde.noise.SampleNoise`."""
    if generator is not None and not isinstance(generator, (torch.Generator, SampleNoise)):
        kind = type(generator).__name__
        raise TypeError(f"generator must be a torch.Generator or a scoresde.SampleNoise, got {kind}")


def randn_like(x: Tensor, generator: torch.Generator | SampleNoise | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``.

    The draw happens on the generator's device and is moved to ``x``'s device, so a
    CPU generator gives the same numbers whether ``x`` lives on the CPU or a GPU.
    """
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def randn(
    shape: Sequence[int],
    generator: torch.Generator | SampleNoise | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``torch.randn`` that tolerates a generator living on another device, or per-sample streams
    (:class:`scoresde.noise.SampleNoise`, drawn directly on ``device``)."""
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    if isinstance(generator, SampleNoise):
        return generator.randn(shape, device=device, dtype=dtype)
    z = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return z.to(device) if device is not None else z


def rand_like(x: Tensor, generator: torch.Generator | SampleNoise | None = None) -> Tensor:
    """Uniform ``[0, 1)`` noise shaped like ``x`` (see :func:`randn_like` for devices)."""
    if generator is None:
        return torch.rand_like(x)
    if isinstance(generator, SampleNoise):
        return generator.rand(x.shape, device=x.device, dtype=x.dtype)
    u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return u.to(x.device)


def check_number(name: str, value: object, minimum: float, strict: bool = False, maximum: float | None = None) -> float:
    """``value`` as a float; a one-line error unless it is a finite real number ``>= minimum`` (``>`` if ``strict``)
    and, with ``maximum``, ``<= maximum``."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value < minimum or (strict and value == minimum):
        sign = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {sign} {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}, got {value!r}")
    return float(value)


def check_options(name: str, value: str, allowed: Sequence[str]) -> str:
    """Validate a string option against its allowed values."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, allowed))}")
    return value
