"""Training: optimize the score model that :mod:`scoresde.build` makes from a config.

Adam with linear warmup and gradient clipping, an exponential moving average of the
weights, checkpoints that resume exactly (weights, EMA, optimizer and every random
state), JSON-lines logs, periodic sample grids with the EMA weights, a tqdm bar, and
multi-process data parallelism with ``torch.distributed`` (launch with ``torchrun``).

A class-conditional model (``model.net.num_classes``) gets the batch's class labels, each
replaced by the null label with probability ``training.p_uncond`` (classifier-free
guidance); the label dropout is drawn from the data generator, so training stays
deterministic and resumes exactly. Its sample grids cycle through the classes.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import __version__
from .build import (
    build_loss,
    build_model,
    build_score,
    build_sde,
    build_training_noise,
    check_resume,
    data_shape,
    load_dataset,
    model_batch,
    with_absolute_root,
)
from .checkpoint import (
    SCORE_FORMAT,
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
from .config import Config, stored_config
from .data import data_levels, to_picture
from .devices import pick_device
from .distributed import init_from_env
from .losses import drop_labels
from .plotting import check_writable_dir, save_image_grid, save_line_plot, save_scatter_grid
from .sde import SDE
from .training.ema import EMA
from .validation import check_config, check_labels


# -- the trainer --------------------------------------------------------------------------------
def learning_rate(cfg: Config, step: int) -> float:
    """Linear warmup: ``lr * min(1, (step + 1) / warmup)`` for the update that produces ``step + 1``."""
    t = cfg.training
    return t.lr * min(1.0, (step + 1) / t.warmup) if t.warmup > 0 else t.lr


def train(cfg: Config, workdir: str | Path, resume: bool = True, progress: bool | None = None,
          overwrite: bool = False) -> Path:  # fmt: skip
    """Train the configured model in ``workdir``; returns the path of the final checkpoint.

    With ``resume`` (default) training continues from the newest checkpoint in
    ``workdir/checkpoints`` exactly where it stopped. ``resume=False`` refuses a workdir
    that already has checkpoints (nothing is deleted); ``overwrite=True`` starts over: it
    first deletes the previous run's checkpoints, ``log.jsonl``, ``loss.png`` and
    ``samples/`` (nothing else). The workdir is locked for the whole run (by rank 0 under
    torchrun), so a second run in the same workdir fails at once. The config, the device
    and the workdir are checked before anything is loaded, built or written. ``progress``
    shows a tqdm bar (default: when stderr is a terminal; otherwise, as in a log, a plain line with the
    step, the loss and the speed at most every 30 s; ``progress=False``: nothing).
    """
    workdir = Path(workdir)
    check_config(cfg)
    cfg = with_absolute_root(cfg)  # stored in the checkpoints: found again from any working directory
    t = cfg.training
    device = pick_device(t.device)
    check_writable_dir(workdir, "workdir")
    lines = progress is None and not sys.stderr.isatty()  # a log: plain progress lines instead of a bar
    if progress is None:
        progress = sys.stderr.isatty()
    rank, world = init_from_env(device)
    if t.batch_size % world:
        raise ValueError(f"training.batch_size {t.batch_size} must be divisible by the {world} processes")
    with ExitStack() as stack:
        error = None
        if rank == 0:  # lock first, then look at or clean up anything in the workdir
            try:
                workdir.mkdir(parents=True, exist_ok=True)
                stack.enter_context(workdir_lock(workdir))
                _prepare_workdir(workdir, cfg, resume, overwrite)
            except (ValueError, RuntimeError, OSError) as err:
                error = err
        if world > 1:  # the other ranks wait for rank 0's set-up and stop with it
            status = [None if error is None else str(error)]
            dist.broadcast_object_list(status, src=0)
            if rank != 0 and status[0] is not None:
                raise RuntimeError(f"rank 0 could not start: {status[0]}")
        if error is not None:
            raise error
        return _train(cfg, workdir, device, rank, world, resume and not overwrite, progress, lines)


PROGRESS_EVERY = 30.0
"""Seconds between the plain progress lines of a run without a progress bar (a log)."""
RUN_OUTPUTS = ("log.jsonl", "loss.png", "samples")
"""What a training run writes besides its checkpoints (deleted by ``overwrite``)."""


def _duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``42s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _prepare_workdir(workdir: Path, cfg: Config, resume: bool, overwrite: bool) -> None:
    """Rank 0, holding the workdir lock: refuse, clear or check what an earlier run left behind."""
    prepare_workdir(workdir, SCORE_FORMAT, resume, overwrite, RUN_OUTPUTS,
                    lambda saved, path: _check_same_run(saved, cfg, path))  # fmt: skip


RESUMABLE = ("data.root", "training.n_iters", "training.log_every", "training.snapshot_every", "training.keep",
             "training.tensorboard", "training.device")  # fmt: skip
"""The config keys a resumed score-model run may change (where the data live, how long, what it logs and keeps,
which device); any other change of the sections it reads is refused."""


def _check_same_run(saved: dict[str, Any], cfg: Config, path: Path) -> None:
    check_resume(stored_config(saved), cfg, path, ("data", "model", "training"), RESUMABLE)


def _train(cfg: Config, workdir: Path, device: torch.device, rank: int, world: int, resume: bool,
           progress: bool, lines: bool = False) -> Path:  # fmt: skip
    ckpt_dir = workdir / "checkpoints"
    t = cfg.training
    is_main = rank == 0
    torch.manual_seed(t.seed)
    sde = build_sde(cfg)
    model = build_model(cfg).to(device)
    num_classes = getattr(model, "num_classes", None)
    labels = None
    if num_classes is None:
        data = load_dataset(cfg, "train")
    else:
        data, labels = load_dataset(cfg, "train", return_labels=True)
        check_labels(labels, num_classes, "model.net.num_classes")
    ema = EMA(model, t.ema, t.ema_warmup)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.beta1, 0.999), eps=t.eps_adam,
                                 weight_decay=t.weight_decay)  # fmt: skip
    # every process draws the same global batch and noise and keeps its slice, so N processes
    # compute exactly the single-process update (up to the order of the gradient all-reduce)
    data_gen = torch.Generator().manual_seed(t.seed * 1000)
    torch.manual_seed(t.seed * 1000 + rank + 1)  # dropout and other global draws
    start_step, history = 0, []
    final = latest = latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        start_step, history = _restore(latest, cfg, model, ema, optimizer, data_gen)
    if is_main:  # records written after the restored checkpoint (or before a first one) are dropped
        truncate_log(workdir / "log.jsonl", start_step)
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    score = build_score(wrapped, sde, cfg)
    loss_fn = build_loss(cfg, sde, score, wrapped)
    draw_noise = build_training_noise(cfg, sde)  # the loss's random inputs, times from training.time_sampling
    scaler = torch.amp.GradScaler("cuda", enabled=t.amp and device.type == "cuda")
    local_batch = t.batch_size // world
    n_data = len(data)

    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.n_iters, initial=start_step, desc="training", unit="it", dynamic_ncols=True, mininterval=1.0)
    log_path = workdir / "log.jsonl"
    writer = _tensorboard(workdir) if (t.tensorboard and is_main) else None
    model.train()
    window, window_start, tick = [], start_step, time.perf_counter()
    run_start = tick
    lines = lines and is_main
    if lines:
        print(f"training steps {start_step + 1} to {t.n_iters} on {device} ({world} process(es), batches of "
              f"{t.batch_size}) in {workdir}", flush=True)  # fmt: skip
    said = time.perf_counter()
    for step in range(start_step, t.n_iters):
        idx = torch.randint(0, n_data, (t.batch_size,), generator=data_gen)
        x = model_batch(data, idx, cfg, data_gen)
        noise = draw_noise(x, data_gen)
        if labels is not None:
            noise["y"] = drop_labels(labels[idx], t.p_uncond, num_classes, data_gen)
        part = slice(rank * local_batch, (rank + 1) * local_batch)
        x, noise = x[part].to(device), {k: v[part].to(device) for k, v in noise.items()}
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=t.amp and device.type == "cuda"):
            loss = loss_fn(x, **noise)
        value = float(loss.detach())  # the step's one host sync: no update is applied from a NaN/inf loss
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {step}; lower training.lr")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        ema.update(model)
        window.append(value)
        done = step + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]:.4f}", refresh=False)
        if done % t.log_every == 0 or done == t.n_iters:
            elapsed = time.perf_counter() - tick
            mean_loss = _all_mean(sum(window) / len(window), world)
            so_far = time.perf_counter() - run_start  # snapshots included: the time left is wall time
            record = {"step": done, "loss": mean_loss, "lr": learning_rate(cfg, step),
                      "images_per_s": (done - window_start) * t.batch_size / max(elapsed, 1e-9),
                      "seconds_left": (t.n_iters - done) * so_far / max(done - start_step, 1)}  # fmt: skip
            history.append(record)
            if lines and (time.perf_counter() - said >= PROGRESS_EVERY or done == t.n_iters):
                said = time.perf_counter()
                print(f"step {done}/{t.n_iters}  loss {mean_loss:.4f}  {record['images_per_s']:.0f} images/s  "
                      f"{_duration(record['seconds_left'])} left", flush=True)  # fmt: skip
            if is_main:
                append_log(log_path, record)
                if writer is not None:
                    writer.add_scalar("loss", mean_loss, done)
            window, window_start, tick = [], done, time.perf_counter()
        if done % t.snapshot_every == 0 or done == t.n_iters:
            if is_main:
                final = _save(ckpt_dir, done, cfg, model, ema, optimizer, data_gen, history, world)
                prune_checkpoints(ckpt_dir, t.keep)
                _snapshot(workdir, done, cfg, sde, model, ema, data, history)
            if world > 1:
                dist.barrier()
    if bar is not None:
        bar.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final if is_main and final is not None else ckpt_dir


def _all_mean(value: float, world: int) -> float:
    if world <= 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / world


def _tensorboard(workdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # pragma: no cover
        raise ImportError("training.tensorboard = true needs the tensorboard package") from err
    return SummaryWriter(str(workdir / "tensorboard"))


def _save(ckpt_dir: Path, step: int, cfg: Config, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer,
          data_gen: torch.Generator, history: list[dict], world: int = 1) -> Path:  # fmt: skip
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.shadow.items()}
    opt_tensors, opt_meta = optimizer_entries(optimizer)
    tensors |= opt_tensors
    tensors["rng.data"] = data_gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "format": SCORE_FORMAT,
        "step": step,
        "ema_updates": ema.num_updates,
        "world_size": world,
        "config": cfg.to_dict(),
        **opt_meta,
        "history": history,
        "versions": {"scoresde": __version__, "torch": torch.__version__},
    }
    return save_checkpoint(ckpt_dir / f"checkpoint_{step:08d}.safetensors", tensors, metadata)


def _restore(path: Path, cfg: Config, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer,
             data_gen: torch.Generator) -> tuple[int, list[dict]]:  # fmt: skip
    tensors, meta = load_checkpoint(path)
    if "optimizer_scalars" not in meta or "rng.data" not in tensors:
        raise ValueError(f"{path} holds weights only (no optimizer or random state: a converted checkpoint), so a "
                         "run cannot resume from it; train in a new workdir")  # fmt: skip
    _check_same_run(meta["config"], cfg, path)
    load_weights_strict(model, prefixed(tensors, "model"))
    for k, v in prefixed(tensors, "ema").items():
        if k not in ema.shadow or ema.shadow[k].shape != v.shape:
            raise ValueError(f"{path}: EMA entry {k} does not fit the model")
        ema.shadow[k].copy_(v)
    ema.num_updates = int(meta.get("ema_updates", meta["step"]))
    restore_optimizer(optimizer, tensors, meta)
    data_gen.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), list(meta.get("history", []))


def _snapshot(workdir: Path, step: int, cfg: Config, sde: SDE, model: nn.Module, ema: EMA, data, history) -> None:
    """Sample a small grid (or scatter) with the EMA weights and redraw the loss curve; a class-conditional
    model draws sample ``i`` from class ``i mod K``."""
    from .sampling import sample

    model.eval()
    try:
        with ema.applied(model):
            n = 64 if cfg.data.dataset != "toy" else 2000
            num_classes = getattr(model, "num_classes", None)
            y = None if num_classes is None else torch.arange(n) % num_classes
            score = build_score(model, sde, cfg, y=y)
            steps = min(cfg.sampling.steps, 200)
            x = sample(sde, score, (n, *data_shape(cfg)), sampler="euler_maruyama", steps=steps,
                       generator=torch.Generator().manual_seed(0), device=next(model.parameters()).device)  # fmt: skip
    finally:
        model.train()
    samples_dir = workdir / "samples"
    if cfg.data.dataset == "toy":
        save_scatter_grid([("data", data[:n]), (f"step {step}", x)], samples_dir / f"step_{step:08d}.png", cols=2)
    else:
        nrow = getattr(model, "num_classes", None) or 8  # a class-conditional model: one class per column
        picture = to_picture(x, data_levels(cfg.data.dataset), tuple(cfg.data.data_range))  # quantized, as data are
        save_image_grid(picture, samples_dir / f"step_{step:08d}.png", nrow=nrow)
    if history:
        steps_, losses = [h["step"] for h in history], [h["loss"] for h in history]
        save_line_plot({"training loss": (steps_, losses)}, workdir / "loss.png", title="training loss",
                       xlabel="step", log_y=True)  # fmt: skip
