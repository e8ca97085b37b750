"""Checkpoints: safetensors tensors plus JSON metadata, written atomically, loaded strictly.

One self-contained file ``checkpoint_<step>.safetensors`` holds every tensor of the
training state (``model.*`` weights, ``ema.*`` averaged weights, ``optim.*`` Adam moments,
``rng.*`` generator states) and, in its header, JSON metadata (config, step, versions,
optimizer hyper-parameters). A readable copy of the metadata is written next to it as
``checkpoint_<step>.json``.

Writing goes to a temporary file that is fsynced and then renamed, so a crash or a
SIGKILL at any moment leaves the previous checkpoints intact; temporary files are
never mistaken for checkpoints. A training run holds an exclusive lock on its workdir
(:func:`workdir_lock`), so two runs never write into the same folder. Loading never
unpickles anything, and loading weights into a model whose parameter names or shapes
differ fails with a message that names the differences (no silent ``strict=False``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors.torch import safe_open as _safe_open
from torch import Tensor, nn

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no workdir locking
    fcntl = None

PATTERN = re.compile(r"checkpoint_(\d+)\.safetensors$")
LOCK_NAME = ".scoresde.lock"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


class WorkdirBusyError(RuntimeError):
    """Another process holds the workdir's lock."""


def _name_path(err: OSError, path: Path) -> None:
    """Attach ``path`` to an OSError raised without one (e.g. ENOSPC from a write), for the error message."""
    if err.filename is None:
        err.filename = str(path)


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``metadata`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"scoresde": json.dumps(metadata, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(contiguous, tmp, metadata=header)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            _name_path(err, path)
        raise
    sidecar = path.with_suffix(".json")
    fd, tmp = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(metadata, handle, indent=2, sort_keys=True)
        os.replace(tmp, sidecar)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            _name_path(err, sidecar)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a folder's newest checkpoint."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint_*.safetensors in {path}")
        return latest
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's JSON metadata from its header only (no tensor is read)."""
    path = resolve_checkpoint(path)
    try:
        with _safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        return json.loads(header["scoresde"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a scoresde checkpoint ({err})") from err


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint: ``(tensors, metadata)``. Raises :class:`CheckpointError` if it is unreadable."""
    path = resolve_checkpoint(path)
    try:
        with _safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
        metadata = json.loads(header["scoresde"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a scoresde checkpoint ({err})") from err
    return tensors, metadata


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in ``directory`` ordered by step (temporary files excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    ckpts = list_checkpoints(directory)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (and their JSON sidecars)."""
    if keep <= 0:
        return
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def clean_temporary_files(directory: str | Path) -> None:
    """Remove temporary files left by an interrupted write (call it only while holding :func:`workdir_lock`)."""
    directory = Path(directory)
    if directory.is_dir():
        for tmp in directory.glob(".checkpoint_*.tmp"):
            tmp.unlink(missing_ok=True)


def remove_checkpoints(directory: str | Path) -> None:
    """Delete every checkpoint, JSON sidecar and temporary checkpoint file in ``directory`` (nothing else)."""
    for ckpt in list_checkpoints(directory):
        ckpt.unlink(missing_ok=True)
        ckpt.with_suffix(".json").unlink(missing_ok=True)
    clean_temporary_files(directory)


@contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``workdir/.scoresde.lock`` for the ``with`` block.

    The kernel drops the lock when the process exits or is killed, so a crashed run never
    leaves its workdir locked. Raises :class:`WorkdirBusyError` at once (no waiting) if
    another process holds it. The lock file itself stays in place.
    """
    path = Path(workdir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise WorkdirBusyError(f"workdir {workdir} is in use by another training run{who}; wait for it "
                                       f"to finish or use another workdir") from None  # fmt: skip
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``tensors`` under ``prefix.`` with the prefix removed."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_weights_strict(model: nn.Module, state: dict[str, Tensor], what: str = "checkpoint") -> None:
    """Load ``state`` into ``model``; any missing, unexpected or reshaped entry is an error naming it."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        lines = [f"the {what} does not fit this model ({type(model).__name__}):"]
        if missing:
            lines.append(f"  missing in the {what}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  not in the model: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        for k in reshaped[:8]:
            lines.append(f"  {k}: {what} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
