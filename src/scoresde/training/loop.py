r"""The one training loop: :func:`fit` trains any :class:`Objective` (the score losses, the classifier's
cross-entropy) with every capability written once.

Per step ``n`` (0-based) it draws the global batch from the seeded data generator (every process draws the
same batch and keeps its slice, so ``N`` processes compute the single-process update up to the order of the
gradient all-reduce), splits its slice into ``grad_accum`` micro-batches whose losses are scaled by
``1 / grad_accum`` and whose gradients are summed (DDP all-reduces once, on the last one), clips the gradient
norm, and takes one Adam step at the learning rate ``lr(n)``:

.. math:: \nabla L = \frac{1}{K} \sum_{k=1}^{K} \nabla L_k, \qquad
          \theta_{n+1} = \mathrm{Adam}(\theta_n, \mathrm{clip}(\nabla L)).

Capabilities (:class:`FitOptions`): ``precision`` ``"fp32"``, ``"bf16"`` (autocast on CPU and CUDA) or
``"fp16"`` (CUDA autocast with a gradient scaler); ``compile`` (the network through :func:`torch.compile`);
``channels_last``; ``grad_checkpointing`` (the network's blocks recompute their activations in the backward
pass); Adam is the fused implementation (CPU and CUDA). The loop never reads a device value between logging
steps: losses and metrics are summed on the device and read at logging and checkpoint steps. A non-finite
loss (or gradient) still never updates the weights: the optimizer step is skipped on the device (the fused
Adam's ``found_inf``; under DDP on every process), and the run stops at the next logging step with a one-line
:class:`FloatingPointError`.

Checkpoints (``workdir/checkpoints/checkpoint_<step>.safetensors``) hold the weights, the EMA(s), the
optimizer, the data generator, every process's global generators (CPU and CUDA) and the fp16 gradient
scaler, so a run killed at any moment resumes bit-exactly from its newest checkpoint (with every option
except ``compile``, whose generated kernels may differ from one compilation to the next; on CUDA with
``deterministic``; see :func:`fit`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..checkpoint import (
    append_log,
    latest_checkpoint,
    load_checkpoint,
    load_weights_strict,
    optimizer_entries,
    prefixed,
    prepare_workdir,
    prune_checkpoints,
    restore_optimizer,
    save_checkpoint,
    truncate_log,
    workdir_lock,
)
from ..distributed import init_from_env
from .ema import EMA, PostHocEMA
from .options import PRECISIONS, FitOptions

PROGRESS_EVERY = 30.0
"""Seconds between the plain progress lines of a run without a progress bar (a log)."""


# -- what fit trains, and how -------------------------------------------------------------------------
LossFn = Callable[[dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]
"""``loss(batch) -> (mean loss, metrics)``: metrics are per-batch means (device tensors) logged beside the loss."""


@dataclass
class Objective:
    """What :func:`fit` trains: a model, how to draw a batch, and its loss.

    Attributes:
        model: the module whose parameters are trained (unwrapped; checkpointed as ``model.*``).
        draw: ``draw(step, generator) -> batch``, the *global* batch of step ``step`` (CPU tensors with the batch
            as their first dimension) and every random input of the loss, drawn from ``generator`` (or, like an
            epoch order, a function of ``step``).
        make_loss: ``make_loss(network) -> loss`` where ``network`` is ``model`` as trained (wrapped in DDP,
            compiled); ``loss(batch)`` is a :data:`LossFn`.
        lr: ``lr(n)``, the learning rate of the update that produces step ``n + 1``.
        adam: keyword arguments of :class:`torch.optim.Adam` besides ``lr`` (betas, eps, weight_decay).
        metadata: JSON entries of every checkpoint (``format`` and ``config`` among them).
        check_resume: ``check_resume(saved_metadata, path)`` refuses a checkpoint of another run.
        snapshot: ``snapshot(step, history, ema)`` on rank 0 after each checkpoint (sample grids, plots), or None.
        what: the name of the objective in messages and the progress bar.
        lr_key: the config key the messages name for the learning rate.
    """

    model: nn.Module
    draw: Callable[[int, torch.Generator], dict[str, Tensor]]
    make_loss: Callable[[nn.Module], LossFn]
    lr: Callable[[int], float]
    metadata: dict[str, Any]
    check_resume: Callable[[dict[str, Any], Path], None]
    adam: dict[str, Any] = field(default_factory=dict)
    snapshot: Callable[[int, list[dict], EMA | None], None] | None = None
    what: str = "training"
    lr_key: str = "training.lr"


# -- gradient checkpointing ---------------------------------------------------------------------------
def _recomputed(forward: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def checkpoint_blocks(model: nn.Module) -> int:
    """Make every block of ``model`` whose class sets ``checkpoint_unit = True`` (the residual and attention
    blocks) recompute its activations in the backward pass instead of storing them; returns how many.

    The result is unchanged (dropout replays its random state); memory falls to about one block's activations
    per block, for about one extra forward pass of compute.
    """
    count = 0
    for module in model.modules():
        if getattr(type(module), "checkpoint_unit", False):
            module.forward = partial(_recomputed, module.forward)
            count += 1
    return count


# -- the workdir --------------------------------------------------------------------------------------
@contextmanager
def claimed_workdir(workdir: Path, fmt: str, resume: bool, overwrite: bool, outputs: tuple[str, ...],
                    same_run: Callable[[dict[str, Any], Path], None], rank: int,
                    world: int) -> Iterator[None]:  # fmt: skip
    """Rank 0 locks ``workdir`` for the block and refuses, clears or checks what an earlier run left there
    (:func:`scoresde.checkpoint.prepare_workdir`); the other ranks wait for it and stop with it."""
    with ExitStack() as stack:
        error = None
        if rank == 0:
            try:
                workdir.mkdir(parents=True, exist_ok=True)
                stack.enter_context(workdir_lock(workdir))
                prepare_workdir(workdir, fmt, resume, overwrite, outputs, same_run)
            except (ValueError, RuntimeError, OSError) as err:
                error = err
        if world > 1:
            status = [None if error is None else str(error)]
            dist.broadcast_object_list(status, src=0)
            if rank != 0 and status[0] is not None:
                raise RuntimeError(f"rank 0 could not start: {status[0]}")
        if error is not None:
            raise error
        yield


def duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``42s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# -- the loop -----------------------------------------------------------------------------------------
def fit(objective: Objective, opts: FitOptions, workdir: Path, device: torch.device, resume: bool = True,
        progress: bool = False, lines: bool = False) -> Path:  # fmt: skip
    """Train ``objective`` in ``workdir`` (claimed by the caller, see :func:`claimed_workdir`) until step
    ``opts.n_iters``; returns the final checkpoint (on every rank but 0: the checkpoints folder).

    ``resume`` continues from the newest checkpoint exactly where it stopped. The model is built (and
    initialised) by the caller; ``fit`` seeds the data generator with ``1000 * seed`` and torch's global
    generators (dropout; CPU and CUDA) with ``1000 * seed + rank + 1``. Bit-exact resume holds for every
    option but ``compile``: a compiled network is numerically equivalent but its generated kernels may round
    differently after a restart, so a resumed compiled run matches the uninterrupted one to float
    tolerance, not bit for bit. On CUDA it also needs ``opts.deterministic`` (some cuDNN and atomic-add
    kernels give different bits from one call to the next). ``progress``: a tqdm bar; ``lines``: plain
    progress lines at most every :data:`PROGRESS_EVERY` seconds (a log).
    """
    with deterministic_algorithms(opts.deterministic):
        return _fit(objective, opts, workdir, device, resume, progress, lines)


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Torch's deterministic kernels while the block runs (``training.deterministic``): on CUDA the same run gives
    the same bits, and a resumed run the uninterrupted one's (cuDNN's benchmark off, cuBLAS with a fixed
    workspace: ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set); an operation with no deterministic kernel is an
    error. The CPU kernels the loop uses are deterministic already."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def _fit(objective: Objective, opts: FitOptions, workdir: Path, device: torch.device, resume: bool, progress: bool,
         lines: bool) -> Path:  # fmt: skip
    rank, world = init_from_env(device)
    is_main = rank == 0
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = workdir / "checkpoints"
    model = objective.model.to(device)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if opts.grad_checkpointing and checkpoint_blocks(model) == 0:
        raise ValueError(f"grad_checkpointing: {type(model).__name__} has no residual or attention blocks to "
                         "checkpoint")  # fmt: skip
    ema = EMA(model, opts.ema, opts.ema_warmup) if opts.ema is not None else None
    posthoc = PostHocEMA(model, opts.posthoc) if opts.posthoc else None
    optimizer = torch.optim.Adam(model.parameters(), lr=objective.lr(0), fused=True, **objective.adam)
    data_gen = torch.Generator().manual_seed(opts.seed * 1000)
    torch.manual_seed(opts.seed * 1000 + rank + 1)  # dropout and other global draws
    scaler = torch.amp.GradScaler("cuda", enabled=opts.precision == "fp16")
    start_step, history = 0, []
    final = latest_checkpoint(ckpt_dir) if resume else None
    if final is not None:
        start_step, history = _restore(final, objective, model, ema, posthoc, optimizer, data_gen, scaler, device,
                                       rank)  # fmt: skip
    if is_main:  # records and post-hoc snapshots written after the restored checkpoint are dropped
        truncate_log(workdir / "log.jsonl", start_step)
        if posthoc is not None:
            posthoc.drop_after(workdir / "posthoc", start_step)

    network: nn.Module = model
    ddp = None
    if world > 1:
        ddp = network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if opts.compile:
        network = torch.compile(network)
    loss_fn = objective.make_loss(network)
    dtype = PRECISIONS[opts.precision]
    local = opts.batch_size // world
    micro = local // opts.grad_accum

    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=opts.n_iters, initial=start_step, desc=objective.what, unit="it", dynamic_ncols=True,
                   mininterval=1.0)  # fmt: skip
    log_path = workdir / "log.jsonl"
    writer = _tensorboard(workdir) if (opts.tensorboard and is_main) else None
    lines = lines and is_main
    if lines:
        print(f"{objective.what} steps {start_step + 1} to {opts.n_iters} on {device} ({world} process(es), "
              f"batches of {opts.batch_size}) in {workdir}", flush=True)  # fmt: skip
    model.train()
    sums: Tensor | None = None  # [loss, non-finite count, metrics...] summed over the window, on the device
    metric_names: list[str] = []
    window_start, tick = start_step, time.perf_counter()
    run_start = said = tick
    for step in range(start_step, opts.n_iters):
        batch = objective.draw(step, data_gen)
        part = slice(rank * local, (rank + 1) * local)
        lr = objective.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        step_sums = None
        for k in range(opts.grad_accum):
            piece = slice(part.start + k * micro, part.start + (k + 1) * micro)
            inputs = {name: _to(value[piece], device, opts.channels_last) for name, value in batch.items()}
            syncing = ddp is None or k == opts.grad_accum - 1
            with nullcontext() if syncing else ddp.no_sync():
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss, metrics = loss_fn(inputs)
                scaler.scale(loss / opts.grad_accum).backward()
            if not metric_names:
                metric_names = sorted(metrics)
            values = torch.stack([loss.detach().float(), *(metrics[m].detach().float() for m in metric_names)])
            step_sums = values / opts.grad_accum if step_sums is None else step_sums + values / opts.grad_accum
        finite = torch.isfinite(step_sums[0])
        scaler.unscale_(optimizer)
        if opts.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        if not scaler.is_enabled():
            # skipped on the device by the fused Adam: a non-finite loss here, or non-finite gradients (another
            # process's loss under DDP: the all-reduced gradients are the same on every process)
            finite = finite & torch.isfinite(grad_norm)
            optimizer.grad_scale, optimizer.found_inf = None, (~finite).float()
        scaler.step(optimizer)  # with fp16 the scaler skips steps whose gradients overflowed, as it does
        scaler.update()
        if ema is not None:
            ema.update(model)
        if posthoc is not None:
            posthoc.update(model)
        entry = torch.cat([torch.where(finite, step_sums[:1], 0.0), (~finite).float()[None], step_sums[1:]])
        sums = entry if sums is None else sums + entry
        done = step + 1
        if bar is not None:
            bar.update(1)
        logging = done % opts.log_every == 0 or done == opts.n_iters
        saving = done % opts.snapshot_every == 0 or done == opts.n_iters
        if posthoc is not None and is_main and done % opts.posthoc_every == 0:
            posthoc.save(workdir / "posthoc", done, model, objective.metadata)
        if not (logging or saving):
            continue
        totals = _all_sum(sums, world).tolist()  # the window's one host read
        bad = int(totals[1])
        if bad:
            raise FloatingPointError(f"{objective.what} loss was NaN or inf at {bad} step(s) of steps "
                                     f"{window_start + 1}-{done} (no update was applied from them); lower "
                                     f"{objective.lr_key}")  # fmt: skip
        if logging:
            n = (done - window_start) * world
            elapsed = time.perf_counter() - tick
            so_far = time.perf_counter() - run_start  # snapshots included: the time left is wall time
            record = {"step": done, "loss": totals[0] / n,
                      **{m: v / n for m, v in zip(metric_names, totals[2:], strict=True)}, "lr": lr,
                      "images_per_s": (done - window_start) * opts.batch_size / max(elapsed, 1e-9),
                      "seconds_left": (opts.n_iters - done) * so_far / max(done - start_step, 1)}  # fmt: skip
            history.append(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.4f}", images_s=f"{record['images_per_s']:.0f}",
                                left=duration(record["seconds_left"]), refresh=False)  # fmt: skip
            if lines and (time.perf_counter() - said >= PROGRESS_EVERY or done == opts.n_iters):
                said = time.perf_counter()
                print(f"step {done}/{opts.n_iters}  loss {record['loss']:.4f}  {record['images_per_s']:.0f} "
                      f"images/s  {duration(record['seconds_left'])} left", flush=True)  # fmt: skip
            if is_main:
                append_log(log_path, record)
                if writer is not None:
                    for name in ("loss", *metric_names, "images_per_s"):
                        writer.add_scalar(name, record[name], done)
            sums, window_start, tick = None, done, time.perf_counter()
        if saving:
            random_state = _random_state(device, world, scaler)  # every process's generators (a collective)
            if is_main:
                final = _save(ckpt_dir, done, objective, model, ema, posthoc, optimizer, data_gen, history, world,
                              random_state)  # fmt: skip
                prune_checkpoints(ckpt_dir, opts.keep)
                if objective.snapshot is not None:
                    objective.snapshot(done, history, ema)
            if world > 1:
                dist.barrier()
    if bar is not None:
        bar.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final if is_main and final is not None else ckpt_dir


def _to(value: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    value = value.to(device, non_blocking=True)
    if channels_last and value.ndim == 4 and value.is_floating_point():
        value = value.contiguous(memory_format=torch.channels_last)
    return value


def _all_sum(values: Tensor, world: int) -> Tensor:
    if world > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values.cpu().double()


def _tensorboard(workdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # pragma: no cover
        raise ImportError("tensorboard = true needs the tensorboard package") from err
    return SummaryWriter(str(workdir / "tensorboard"))


def _save(ckpt_dir: Path, step: int, objective: Objective, model: nn.Module, ema: EMA | None,
          posthoc: PostHocEMA | None, optimizer: torch.optim.Optimizer, data_gen: torch.Generator,
          history: list[dict], world: int, random_state: tuple[dict[str, Tensor], dict[str, Any]]) -> Path:  # fmt: skip
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta: dict[str, Any] = dict(random_state[1])
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.shadow.items()}
        meta["ema_updates"] = ema.num_updates
    if posthoc is not None:
        tensors |= posthoc.state_tensors()
        meta["posthoc_updates"] = posthoc.num_updates
    opt_tensors, opt_meta = optimizer_entries(optimizer)
    tensors |= opt_tensors
    tensors["rng.data"] = data_gen.get_state()
    tensors |= random_state[0]
    from .. import __version__

    metadata = {**objective.metadata, "step": step, **meta, "world_size": world, **opt_meta, "history": history,
                "versions": {"scoresde": __version__, "torch": torch.__version__}}  # fmt: skip
    return save_checkpoint(ckpt_dir / f"checkpoint_{step:08d}.safetensors", tensors, metadata)


def _restore(path: Path, objective: Objective, model: nn.Module, ema: EMA | None, posthoc: PostHocEMA | None,
             optimizer: torch.optim.Optimizer, data_gen: torch.Generator, scaler: torch.amp.GradScaler,
             device: torch.device, rank: int) -> tuple[int, list[dict]]:  # fmt: skip
    tensors, meta = load_checkpoint(path)
    if "optimizer_scalars" not in meta or "rng.data" not in tensors:
        raise ValueError(f"{path} holds weights only (no optimizer or random state: a converted checkpoint), so a "
                         "run cannot resume from it; train in a new workdir")  # fmt: skip
    objective.check_resume(meta["config"], path)
    load_weights_strict(model, prefixed(tensors, "model"), what=f"{objective.what} checkpoint")
    if ema is not None:
        for k, v in prefixed(tensors, "ema").items():
            if k not in ema.shadow or ema.shadow[k].shape != v.shape:
                raise ValueError(f"{path}: EMA entry {k} does not fit the model")
            ema.shadow[k].copy_(v)
        ema.num_updates = int(meta.get("ema_updates", meta["step"]))
    if posthoc is not None:
        posthoc.load_state(tensors, int(meta.get("posthoc_updates", 0)), path)
    restore_optimizer(optimizer, tensors, meta)
    data_gen.set_state(tensors["rng.data"])
    _restore_random_state(tensors, meta, device, rank, scaler)
    return int(meta["step"]), list(meta.get("history", []))


def _random_state(device: torch.device, world: int, scaler: torch.amp.GradScaler) -> tuple[dict[str, Tensor], dict]:
    """Every process's global generators (dropout and other draws inside the network: torch's CPU generator and,
    on CUDA, the device's), as checkpoint tensors ``rng.torch`` / ``rng.cuda`` (process 0; the names older
    checkpoints have) and ``rng.torch.<rank>`` / ``rng.cuda.<rank>`` (the others), with the fp16 gradient scaler's
    state as metadata. Collective under DDP: every process calls it at every checkpoint step."""
    parts = [torch.get_rng_state()]
    if device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(device))
    sizes = [len(p) for p in parts]
    mine = torch.cat(parts)
    if world > 1:
        comm = mine.to(device) if dist.get_backend() == "nccl" else mine
        gathered = [torch.empty_like(comm) for _ in range(world)]
        dist.all_gather(gathered, comm)
        states = [g.cpu() for g in gathered]
    else:
        states = [mine]
    tensors: dict[str, Tensor] = {}
    for rank, state in enumerate(states):
        suffix = "" if rank == 0 else f".{rank}"
        for name, piece in zip(("torch", "cuda"), state.split(sizes), strict=False):
            tensors[f"rng.{name}{suffix}"] = piece.clone()
    meta = {"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {}
    return tensors, meta


def _restore_random_state(tensors: dict[str, Tensor], meta: dict[str, Any], device: torch.device, rank: int,
                          scaler: torch.amp.GradScaler) -> None:  # fmt: skip
    """Set this process's generators (and the gradient scaler) from a checkpoint :func:`_random_state` wrote. A
    process with no state of its own there (a checkpoint of fewer processes, or of the CPU) keeps the seeding
    :func:`fit` gave it, and the run then continues exactly only up to those draws."""
    suffix = "" if rank == 0 else f".{rank}"
    if f"rng.torch{suffix}" in tensors:
        torch.set_rng_state(tensors[f"rng.torch{suffix}"])
    if device.type == "cuda" and f"rng.cuda{suffix}" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"], device)
    if scaler.is_enabled() and "grad_scaler" in meta:
        scaler.load_state_dict(meta["grad_scaler"])


# learning-rate decays after the warmup: progress p in [0, 1) of the post-warmup updates -> factor of lr
LR_DECAYS: dict[str, Callable[[float], float]] = {
    "none": lambda p: 1.0,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "linear": lambda p: 1.0 - p,
}


def learning_rate_schedule(lr: float, warmup: int, step: int, n_iters: int | None = None, decay: str = "none") -> float:
    """The learning rate of the update that produces ``step + 1``: linear warmup
    ``lr * min(1, (step + 1) / warmup)``, then with ``decay`` a factor ``f(p)`` of the post-warmup progress
    ``p = (step - warmup) / (n_iters - warmup)`` (``"cosine"``: ``(1 + cos(pi p)) / 2``; ``"linear"``: ``1 - p``),
    which reaches 0 just after the last update, so every update keeps a positive rate."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if decay == "none":
        return lr
    if n_iters is None:
        raise ValueError(f"the {decay} learning-rate decay needs n_iters (the run's last step)")
    progress = (step - warmup) / max(1, n_iters - warmup)
    return lr * LR_DECAYS[decay](min(progress, 1.0))
