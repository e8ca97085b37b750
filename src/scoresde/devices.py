"""Devices: a device name from a config or the command line as a usable ``torch.device``."""

from __future__ import annotations

import os

import torch


def api_device(device: str | torch.device | None) -> torch.device | None:
    """A device argument of the API checked like :func:`pick_device` (``None`` stays ``None``: the caller's default),
    so that ``device="cuda"`` without CUDA is a one-line ``ValueError``, not torch's ``AssertionError``."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string or a torch.device, got {type(device).__name__}")
    if isinstance(device, torch.device) and device.type == "cpu":
        return device
    return pick_device(str(device))


def pick_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as a usable device, else a one-line ``ValueError``.

    ``"auto"`` and ``"cuda"`` without an index take the process's ``LOCAL_RANK`` GPU under torchrun.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available to this torch "
                             f"({torch.__version__}); use 'cpu'")  # fmt: skip
        if device.index is None:
            device = torch.device(f"cuda:{local}")
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} asked for, but MPS is not available; use 'cpu'")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device
