"""Training: build the SDE, data and network from a config, then optimize the score model.

Adam with linear warmup and gradient clipping, an exponential moving average of the
weights, checkpoints that resume exactly (weights, EMA, optimizer and every random
state), JSON-lines logs, periodic sample grids with the EMA weights, a tqdm bar, and
multi-process data parallelism with ``torch.distributed`` (launch with ``torchrun``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import __version__
from .checkpoint import (
    clean_temporary_files,
    latest_checkpoint,
    load_checkpoint,
    load_weights_strict,
    prefixed,
    prune_checkpoints,
    save_checkpoint,
)
from .config import Config, from_dict
from .data import ImageData, load_cifar10, load_digits, load_image_folder, load_mnist, to_model, to_unit, toy_data
from .distributed import init_from_env
from .losses import ddpm_loss, dsm_loss, smld_loss, training_noise
from .nets import NCSNpp, TimeMLP, ddpm_cifar10, ddpmpp_cifar10, ddpmpp_small, ncsnpp_cifar10
from .plotting import atomic_write, save_image_grid, save_line_plot, save_scatter_grid
from .score import ModelScore
from .sde import SDE, VESDE, VPSDE, SubVPSDE

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "ncsnpp": ncsnpp_cifar10,
    "ddpmpp": ddpmpp_cifar10,
    "ddpm": ddpm_cifar10,
    "ddpmpp_small": ddpmpp_small,
    "unet": NCSNpp,
    "mlp": TimeMLP,
}


# -- building blocks from a config -----------------------------------------------------------
def build_sde(cfg: Config) -> SDE:
    s = cfg.sde
    if s.type == "vp":
        return VPSDE(s.beta_min, s.beta_max, s.N)
    if s.type == "subvp":
        return SubVPSDE(s.beta_min, s.beta_max, s.N)
    if s.type == "ve":
        return VESDE(s.sigma_min, s.sigma_max, s.N)
    raise ValueError(f"unknown sde.type {s.type!r}; choose 'vp', 'subvp' or 've'")


def load_dataset(cfg: Config, split: str = "train") -> ImageData | Tensor:
    """The configured dataset: :class:`ImageData` for images, a ``[N, 2]`` tensor for toys."""
    d = cfg.data
    if d.dataset == "digits":
        return load_digits(split)
    if d.dataset == "toy":
        seed = cfg.training.seed + (0 if split == "train" else 1)
        return toy_data(d.toy, d.toy_size, generator=torch.Generator().manual_seed(seed))
    if not d.root:
        raise ValueError(f"data.root must point at the {d.dataset} files")
    if d.dataset == "image_folder":
        return load_image_folder(Path(d.root) / split if (Path(d.root) / split).is_dir() else d.root,
                                 d.image_size, d.channels)  # fmt: skip
    if d.dataset == "cifar10":
        return load_cifar10(d.root, split)
    if d.dataset == "mnist":
        return load_mnist(d.root, split)
    raise ValueError(f"unknown data.dataset {d.dataset!r}")


def data_shape(cfg: Config) -> tuple[int, ...]:
    d = cfg.data
    return (2,) if d.dataset == "toy" else (d.channels, d.image_size, d.image_size)


def build_model(cfg: Config) -> nn.Module:
    m, shape = cfg.model, data_shape(cfg)
    if m.arch not in ARCHS:
        raise ValueError(f"unknown model.arch {m.arch!r}; choose one of {list(ARCHS)}")
    kwargs = dict(m.net)
    if m.arch == "mlp":
        kwargs.setdefault("dim", shape[0])
    else:
        kwargs = {"image_size": shape[1], "channels": shape[0]} | kwargs
    try:
        return ARCHS[m.arch](**kwargs)
    except TypeError as err:
        raise ValueError(f"model.net has an option {m.arch!r} does not accept: {err}") from err


def build_score(model: nn.Module, sde: SDE, cfg: Config) -> ModelScore:
    m = cfg.model
    return ModelScore(model, sde, prediction=m.prediction, time_input=m.time_input, time_scale=m.time_scale)


def model_batch(data: ImageData | Tensor, idx: Tensor, cfg: Config, generator: torch.Generator) -> Tensor:
    """A training batch in the model's space (dequantized, scaled, optionally flipped)."""
    if isinstance(data, Tensor):
        return data[idx]
    d = cfg.data
    return to_model(data.images[idx], data.levels, tuple(d.data_range), d.dequantize, generator, d.flip)


# -- EMA --------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a model's floating-point parameters: ``e <- d e + (1 - d) p``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self, model: nn.Module):
        """Temporarily swap the EMA weights into ``model``."""
        params = dict(model.named_parameters())
        backup = {k: params[k].detach().clone() for k in self.shadow}
        with torch.no_grad():
            for k, v in self.shadow.items():
                params[k].copy_(v)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    params[k].copy_(v)


# -- distributed helpers ---------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device(f"cuda:{local}")
        return torch.device("cpu")
    return torch.device(name)


# -- the trainer --------------------------------------------------------------------------------
def _loss_fn(cfg: Config, sde: SDE, score: ModelScore, model: nn.Module) -> Callable[..., Tensor]:
    """``loss(x, **noise)`` for the configured objective; ``noise`` comes from :func:`training_noise`."""
    t = cfg.training
    if t.loss == "dsm":
        return lambda x, **noise: dsm_loss(sde, score, x, t.weighting, t.reduce, t.eps, **noise)
    if t.loss == "ddpm":
        return lambda x, **noise: ddpm_loss(sde, model, x, t.reduce, **noise)
    if t.loss == "smld":
        return lambda x, **noise: smld_loss(sde, score, x, t.reduce, **noise)
    raise ValueError(f"unknown training.loss {t.loss!r}; choose 'dsm', 'ddpm' or 'smld'")


def learning_rate(cfg: Config, step: int) -> float:
    """Linear warmup: ``lr * min(1, (step + 1) / warmup)`` for the update that produces ``step + 1``."""
    t = cfg.training
    return t.lr * min(1.0, (step + 1) / t.warmup) if t.warmup > 0 else t.lr


def train(cfg: Config, workdir: str | Path, resume: bool = True, progress: bool = True) -> Path:
    """Train the configured model in ``workdir``; returns the path of the final checkpoint.

    With ``resume`` (default) training continues from the newest checkpoint in
    ``workdir/checkpoints`` exactly where it stopped.
    """
    workdir = Path(workdir)
    ckpt_dir = workdir / "checkpoints"
    t = cfg.training
    device = pick_device(t.device)
    rank, world = init_from_env(device)
    if t.batch_size % world:
        raise ValueError(f"training.batch_size {t.batch_size} must be divisible by the {world} processes")
    is_main = rank == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        clean_temporary_files(ckpt_dir)

    torch.manual_seed(t.seed)
    sde = build_sde(cfg)
    data = load_dataset(cfg, "train")
    model = build_model(cfg).to(device)
    ema = EMA(model, t.ema)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.beta1, 0.999), eps=t.eps_adam,
                                 weight_decay=t.weight_decay)  # fmt: skip
    # every process draws the same global batch and noise and keeps its slice, so N processes
    # compute exactly the single-process update (up to the order of the gradient all-reduce)
    data_gen = torch.Generator().manual_seed(t.seed * 1000)
    torch.manual_seed(t.seed * 1000 + rank + 1)  # dropout and other global draws
    start_step, history = 0, []
    latest = latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        start_step, history = _restore(latest, cfg, model, ema, optimizer, data_gen)
        if is_main:
            _truncate_log(workdir / "log.jsonl", start_step)
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    score = build_score(wrapped, sde, cfg)
    loss_fn = _loss_fn(cfg, sde, score, wrapped)
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
    for step in range(start_step, t.n_iters):
        idx = torch.randint(0, n_data, (t.batch_size,), generator=data_gen)
        x = model_batch(data, idx, cfg, data_gen)
        noise = training_noise(t.loss, sde, x, t.eps, data_gen)
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
            record = {"step": done, "loss": mean_loss, "lr": learning_rate(cfg, step),
                      "images_per_s": (done - window_start) * t.batch_size / max(elapsed, 1e-9)}  # fmt: skip
            history.append(record)
            if is_main:
                with open(log_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if writer is not None:
                    writer.add_scalar("loss", mean_loss, done)
            window, window_start, tick = [], done, time.perf_counter()
        if done % t.snapshot_every == 0 or done == t.n_iters:
            if is_main:
                _save(ckpt_dir, done, cfg, model, ema, optimizer, data_gen, history, world)
                prune_checkpoints(ckpt_dir, t.keep)
                _snapshot(workdir, done, cfg, sde, model, ema, data, history)
            if world > 1:
                dist.barrier()
    if bar is not None:
        bar.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return latest_checkpoint(ckpt_dir) if is_main else ckpt_dir


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after ``step`` (by a run that was killed before its next checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write(path, lambda handle: handle.write("".join(line + "\n" for line in kept).encode()))


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
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in opt_state["state"].items():
        for name, value in state.items():
            if isinstance(value, Tensor) and value.ndim > 0:
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = float(value)
    tensors["rng.data"] = data_gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "format": "scoresde-checkpoint-1",
        "step": step,
        "world_size": world,
        "config": cfg.to_dict(),
        "optimizer_scalars": scalars,
        "optimizer_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]],
        "history": history,
        "versions": {"scoresde": __version__, "torch": torch.__version__},
    }
    return save_checkpoint(ckpt_dir / f"checkpoint_{step:08d}.safetensors", tensors, metadata)


def _restore(path: Path, cfg: Config, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer,
             data_gen: torch.Generator) -> tuple[int, list[dict]]:  # fmt: skip
    tensors, meta = load_checkpoint(path)
    saved = from_dict(meta["config"])
    if saved.model != cfg.model or saved.data.dataset != cfg.data.dataset or saved.sde != cfg.sde:
        raise ValueError(f"{path} was written with a different model, SDE or dataset; use a new workdir")
    load_weights_strict(model, prefixed(tensors, "model"))
    for k, v in prefixed(tensors, "ema").items():
        if k not in ema.shadow or ema.shadow[k].shape != v.shape:
            raise ValueError(f"{path}: EMA entry {k} does not fit the model")
        ema.shadow[k].copy_(v)
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
    data_gen.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), list(meta.get("history", []))


def _snapshot(workdir: Path, step: int, cfg: Config, sde: SDE, model: nn.Module, ema: EMA, data, history) -> None:
    """Sample a small grid (or scatter) with the EMA weights and redraw the loss curve."""
    from .sampling import sample

    model.eval()
    try:
        with ema.applied(model):
            score = build_score(model, sde, cfg)
            n = 64 if cfg.data.dataset != "toy" else 2000
            steps = min(cfg.sampling.steps, 200)
            x = sample(sde, score, (n, *data_shape(cfg)), sampler="euler_maruyama", steps=steps,
                       generator=torch.Generator().manual_seed(0), device=next(model.parameters()).device)  # fmt: skip
    finally:
        model.train()
    samples_dir = workdir / "samples"
    if cfg.data.dataset == "toy":
        save_scatter_grid([("data", data[:n]), (f"step {step}", x)], samples_dir / f"step_{step:08d}.png", cols=2)
    else:
        save_image_grid(to_unit(x, tuple(cfg.data.data_range)), samples_dir / f"step_{step:08d}.png", nrow=8)
    if history:
        steps_, losses = [h["step"] for h in history], [h["loss"] for h in history]
        save_line_plot({"training loss": (steps_, losses)}, workdir / "loss.png", title="training loss",
                       xlabel="step", log_y=True)  # fmt: skip


def load_for_inference(path: str | Path, use_ema: bool = True, device: str = "cpu") -> tuple[Config, SDE, nn.Module]:
    """Rebuild ``(config, sde, model)`` from a checkpoint, with the EMA weights by default."""
    tensors, meta = load_checkpoint(path)
    cfg = from_dict(meta["config"])
    sde = build_sde(cfg)
    model = build_model(cfg)
    load_weights_strict(model, prefixed(tensors, "model"))
    if use_ema:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in prefixed(tensors, "ema").items():
                params[k].copy_(v)
    model.to(device).eval()
    return cfg, sde, model
