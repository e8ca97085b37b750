"""How the training loop runs: :class:`FitOptions` and their checks (the keys a config's ``[training]`` and
``[classifier]`` sections share)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
from typing import Any

import torch

CPU_COMPILERS = ("g++", "c++", "clang++")
"""C++ compilers torch.compile's CPU code generation can use (besides ``$CXX``)."""

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``training.precision`` -> the autocast dtype (``None``: no autocast)."""


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` runs (the shared keys of a config's ``[training]`` and ``[classifier]`` sections)."""

    n_iters: int
    batch_size: int
    grad_clip: float = 1.0
    grad_accum: int = 1
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    grad_checkpointing: bool = False
    deterministic: bool = False  # torch's deterministic algorithms (bit-exact runs and resumes on CUDA)
    ema: float | None = None  # classic EMA decay (None: no EMA)
    ema_warmup: bool = True
    posthoc: tuple[float, ...] = ()  # sigma_rel of the post-hoc EMA profiles (empty: none)
    posthoc_every: int = 0
    seed: int = 0
    log_every: int = 50
    snapshot_every: int = 1000
    keep: int = 3
    tensorboard: bool = False


def fit_options(section: Any, **extra: Any) -> FitOptions:
    """The :class:`FitOptions` named by a config section's keys (plus ``extra``); a key the section lacks keeps
    its default."""
    names = [f for f in FitOptions.__dataclass_fields__ if hasattr(section, f) and f not in extra]
    return FitOptions(**{name: getattr(section, name) for name in names}, **extra)


def check_fit_options(opts: FitOptions, device: torch.device, prefix: str = "training", world: int = 1) -> None:
    """One-line ``ValueError`` unless ``opts`` can run on ``device`` in ``world`` processes (cheap; before anything
    is built)."""
    if opts.precision not in PRECISIONS:
        raise ValueError(f"{prefix}.precision must be one of {sorted(PRECISIONS)}, got {opts.precision!r}")
    if opts.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"{prefix}.precision 'fp16' needs a CUDA device (a gradient scaler); on {device.type} "
                         "use 'bf16' or 'fp32'")  # fmt: skip
    if opts.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{prefix}.precision 'bf16': this GPU has no bfloat16; use 'fp16'")
    if opts.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(f"{prefix}.precision 'bf16' on a CPU without AVX-512 BF16 or AMX: bfloat16 is emulated there, "
                      "many times slower than 'fp32' (17x measured for the main job on an AVX2 CPU)",
                      SlowPrecisionWarning, stacklevel=2)  # fmt: skip
    if opts.grad_accum < 1 or opts.batch_size % opts.grad_accum:
        raise ValueError(f"{prefix}.batch_size {opts.batch_size} must be divisible by {prefix}.grad_accum "
                         f"{opts.grad_accum} (equal micro-batches)")  # fmt: skip
    if opts.batch_size % (world * opts.grad_accum):
        raise ValueError(f"{prefix}.batch_size {opts.batch_size} must be divisible by the {world} processes times "
                         f"{prefix}.grad_accum {opts.grad_accum}")  # fmt: skip
    if opts.compile:
        missing = compile_missing(device)
        if missing:
            raise ValueError(f"{prefix}.compile on {device.type} needs {missing}, which this machine lacks: install it "
                             f"or set {prefix}.compile = false")  # fmt: skip


class SlowPrecisionWarning(UserWarning):
    """A precision option that this machine runs much slower than float32."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX tiles), where ``precision = "bf16"`` is
    faster than float32; elsewhere torch emulates it (``benchmarks/results/training.md``)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def compile_missing(device: torch.device) -> str | None:
    """What :func:`torch.compile`'s code generation needs on ``device`` and cannot find (``None``: nothing): a C++
    compiler on the CPU (``$CXX`` or one of :data:`CPU_COMPILERS` on the ``PATH``), Triton on CUDA. Checked before
    training starts, so that a missing one is not a traceback from inside the first step."""
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") is not None else "the triton package"
    if device.type == "cpu":
        candidates = [os.environ["CXX"]] if os.environ.get("CXX") else list(CPU_COMPILERS)
        if not any(shutil.which(name) for name in candidates):
            return "a C++ compiler (" + (f"$CXX={candidates[0]}" if os.environ.get("CXX") else "g++ or clang++") + ")"
    return None
