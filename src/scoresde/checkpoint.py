"""Checkpoints: safetensors tensors plus JSON metadata, written atomically, loaded strictly.

One self-contained file ``checkpoint_<step>.safetensors`` holds every tensor of the
training state (``model.*`` weights, ``ema.*`` averaged weights, ``optim.*`` Adam moments,
``rng.*`` generator states) and, in its header, JSON metadata (config, step, versions,
optimizer hyper-parameters). A readable copy of the metadata is written next to it as
``checkpoint_<step>.json``.

Writing goes to a temporary file that is fsynced and then renamed, so a crash or a
SIGKILL at any moment leaves the previous checkpoints intact; temporary files are
never mistaken for checkpoints. A training run holds an exclusive lock on its workdir
(:func:`workdir_lock`), so two runs never write into the same folder, and
:func:`prepare_workdir` refuses to resume, or to overwrite, a run of another kind (a score
model's checkpoints vs a noise-conditional classifier's: the ``format`` in the metadata).
Loading never unpickles anything, and loading weights into a model whose parameter names or shapes
differ fails with a message that names the differences (no silent ``strict=False``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors.torch import safe_open as _safe_open
from torch import Tensor, nn

from .config import stored_config
from .plotting import atomic_write, name_path, shareable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no workdir locking
    fcntl = None

PATTERN = re.compile(r"checkpoint_(\d+)\.safetensors$")
LOCK_NAME = ".scoresde.lock"
SCORE_FORMAT = "scoresde-checkpoint-1"
CLASSIFIER_FORMAT = "scoresde-classifier-1"
FORMAT_NAMES: dict[str, str] = {SCORE_FORMAT: "score model", CLASSIFIER_FORMAT: "noise-conditional classifier"}


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


class WorkdirBusyError(RuntimeError):
    """Another process holds the workdir's lock."""


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``metadata`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"scoresde": json.dumps(metadata, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            save_file(contiguous, tmp, metadata=header)
        except SafetensorError as err:  # safetensors reports a failed write (a full disk) as its own error type
            raise OSError(f"{path}: the checkpoint could not be written ({err}); is the disk full?") from err
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        shareable(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            name_path(err, path)
        raise
    sidecar = path.with_suffix(".json")
    fd, tmp = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(metadata, handle, indent=2, sort_keys=True)
        shareable(tmp)
        os.replace(tmp, sidecar)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            name_path(err, sidecar)
        raise
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, a folder's newest checkpoint, or a training workdir's
    newest (in its ``checkpoints/``)."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints")
        if latest is None:
            raise CheckpointError(f"no checkpoint_*.safetensors in {path}")
        return latest
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    return path


def _check_readable(path: Path) -> None:
    """A file we may not open is unreadable, not corrupt: say so (permissions, not its contents)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err.strerror or err}") from err


def _read_header(path: Path) -> dict[str, Any]:
    """The JSON metadata in a checkpoint file's header (no tensor is read)."""
    _check_readable(path)
    try:
        with _safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        return json.loads(header["scoresde"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a scoresde checkpoint ({err})") from err


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a checkpoint file."""
    _check_readable(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a scoresde checkpoint ({err})") from err


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's JSON metadata from its header only (no tensor is read)."""
    return _read_header(resolve_checkpoint(path))


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint: ``(tensors, metadata)``. Raises :class:`CheckpointError` if it is unreadable."""
    path = resolve_checkpoint(path)
    metadata = _read_header(path)
    return _read_tensors(path), metadata


def checkpoint_config(
    meta: dict[str, Any], path: str | Path, fmt: str = SCORE_FORMAT, data_root: str | Path | None = None
) -> Any:
    """The training config (:class:`scoresde.config.Config`) stored in a checkpoint's metadata, of a score model or
    the ``fmt`` asked for; ``data_root`` (a directory) replaces its ``data.root``: the dataset's folder here."""
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} is not a scoresde training checkpoint (its metadata has no config)")
    check_format(meta, fmt, path)
    config = stored_config(meta["config"])
    if data_root is not None:
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"--data-root {data_root} is not a directory")
        config.data.root = str(data_root)
    return config


class Checkpoint:
    """A checkpoint opened once: its file, its metadata and its training config, read from the header only.

    ``Checkpoint.open(path)`` takes a checkpoint file or a checkpoints folder (its newest), checks the
    format (a score model's by default) and parses the stored config; :meth:`tensors` reads the
    weights, :meth:`load` builds the :class:`~scoresde.score.ScoreModel`. The command line opens each
    checkpoint of a run once and loads its tensors once.

    Attributes:
        path: the checkpoint file.
        meta: its JSON metadata (config, step, versions, format).
        config: the training config (:class:`scoresde.config.Config`), ``data.root`` replaced by ``data_root``.
        step: the training step it was written at (``None`` if not recorded).
    """

    def __init__(self, path: Path, meta: dict[str, Any], config: Any) -> None:
        self.path, self.meta, self.config = path, meta, config
        self.step: int | None = meta.get("step")

    @classmethod
    def open(cls, path: str | Path, fmt: str = SCORE_FORMAT, data_root: str | Path | None = None) -> Checkpoint:
        """Resolve ``path``, read the header and the config; ``data_root`` (a directory) replaces ``data.root``."""
        path = resolve_checkpoint(path)
        meta = _read_header(path)
        config = checkpoint_config(meta, path, fmt, data_root)
        return cls(path, meta, config)

    @property
    def format(self) -> str:
        return self.meta.get("format", SCORE_FORMAT)

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor of the checkpoint (``model.*``, ``ema.*``, ``optim.*``, ``rng.*``)."""
        return _read_tensors(self.path)

    def load(self, ema: bool = True, device: str | torch.device | None = None) -> Any:
        """The :class:`~scoresde.score.ScoreModel` of a score model's checkpoint, with the EMA weights by default
        (``ema=False``: the raw weights), in eval mode on ``device`` (default CPU)."""
        from .model import model_from_checkpoint

        return model_from_checkpoint(self, ema=ema, device=device)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, step={self.step}, format={self.format!r})"


def check_format(meta: dict[str, Any], fmt: str, path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless the metadata's ``format`` is ``fmt`` (a missing one counts as a
    score model's, the first format)."""
    found = meta.get("format", SCORE_FORMAT)
    if found != fmt:
        raise CheckpointError(f"{path} is a {FORMAT_NAMES.get(found, repr(found))} checkpoint, not a "
                              f"{FORMAT_NAMES.get(fmt, repr(fmt))} one")  # fmt: skip


def optimizer_entries(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's state as tensors ``optim.<param>.<name>`` and JSON metadata (its scalars and groups)."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, float] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor) and value.ndim > 0:
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = float(value)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
    return tensors, {"optimizer_scalars": scalars, "optimizer_groups": groups}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Load the state written by :func:`optimizer_entries` back into ``optimizer``.

    Each moment gets its parameter's memory format (channels-last weights): the fused Adam reads a moment and
    its parameter element by element in memory order, so a contiguous moment of a channels-last weight would be
    silently wrong."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in prefixed(tensors, "optim").items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = torch.tensor(value)
    current = optimizer.state_dict()["param_groups"]
    groups = [dict(g, params=c["params"]) for g, c in zip(meta["optimizer_groups"], current, strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    for group in optimizer.param_groups:  # stored contiguous: give each moment its parameter's memory format
        for param in group["params"]:
            entries = optimizer.state.get(param, {})
            for name, value in entries.items():
                if isinstance(value, Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    entries[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


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


def prepare_workdir(
    workdir: Path,
    fmt: str,
    resume: bool,
    overwrite: bool,
    outputs: Sequence[str],
    same_run: Callable[[dict[str, Any], Path], None],
) -> None:
    """Holding :func:`workdir_lock`: refuse, clear or check what an earlier run left in ``workdir``.

    Checkpoints of another kind than ``fmt`` (a score model's in a classifier's workdir, or the
    reverse) are refused, even with ``overwrite``. ``overwrite`` deletes the checkpoints and the
    run's ``outputs`` (names of files or folders in ``workdir``; nothing else). Otherwise existing
    checkpoints are refused without ``resume`` and checked with ``same_run(saved_config, path)``
    with it; temporary files of an interrupted write are removed.
    """
    ckpt_dir = workdir / "checkpoints"
    found = list_checkpoints(ckpt_dir)
    meta = None
    if found:
        try:
            meta = read_metadata(found[-1])
        except CheckpointError:
            if resume and not overwrite:
                raise
    if meta is not None and meta.get("format", SCORE_FORMAT) != fmt:
        kind = FORMAT_NAMES.get(meta.get("format", SCORE_FORMAT), "another")
        raise ValueError(f"workdir {workdir} holds a {kind} run ({found[-1].name}), not a {FORMAT_NAMES[fmt]} "
                         f"run; use another workdir")  # fmt: skip
    if overwrite:
        remove_checkpoints(ckpt_dir)
        for name in outputs:
            path = workdir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return
    if found and not resume:
        raise ValueError(f"workdir {workdir} already has {len(found)} checkpoint(s) (newest {found[-1].name}); "
                         f"resume from them (leave out --no-resume / resume=False), start over with --overwrite "
                         f"(overwrite=True; deletes them) or use another workdir")  # fmt: skip
    if found:
        same_run(meta["config"], found[-1])
    clean_temporary_files(ckpt_dir)


@contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``workdir/.scoresde.lock`` for the ``with`` block.

    The kernel drops the lock when the process exits or is killed, so a crashed run never
    leaves its workdir locked. Raises :class:`WorkdirBusyError` at once (no waiting) if
    another process holds it. The lock file itself stays in place.
    """
    with file_lock(Path(workdir) / LOCK_NAME, f"workdir {workdir} is in use by another training run{{who}}; wait "
                   "for it to finish or use another workdir") as path:  # fmt: skip
        yield path


@contextmanager
def file_lock(path: str | Path, busy: str) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the file ``path`` (created if missing) for the ``with`` block, or raise
    :class:`WorkdirBusyError` with the message ``busy`` (``{who}`` in it becomes the holder's pid) at once."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                raise WorkdirBusyError(busy.format(who=f" (pid {holder})" if holder.isdigit() else "")) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def append_log(path: Path, record: dict) -> None:
    """Append one JSON record to a run's ``log.jsonl``."""
    try:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as err:  # e.g. a full disk: name the file in the message
        if err.filename is None:
            err.filename = str(path)
        raise


def truncate_log(path: Path, step: int) -> None:
    """Drop log records written after ``step`` (by a run that was killed before its next checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write(path, lambda handle: handle.write("".join(line + "\n" for line in kept).encode()))


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
