r"""Sample quality of a checkpoint: Fréchet distance, KID, class statistics, NFE, time and likelihood.

:func:`evaluate` draws ``n`` samples from a checkpoint (in batches, one noise stream per
sample, so the samples do not depend on the batch size or the number of processes) and
compares them with a reference split in a feature space:

* images: the Fréchet distance (FD) and KID in the 64-d feature space of the shipped
  digits classifier (:mod:`scoresde.features`), or of Inception-v3 when a weights file
  is given (any RGB or grey dataset). Both are reported next to their *floor*: the same
  statistic between ``n`` training images and the reference split, i.e. what a perfect
  model would score with this many samples. Samples and data are quantized to the
  dataset's levels first, as images are. The digits classifier also gives the class
  histogram and the mean confidence of the samples;
* 2-D toys: MMD, sliced Wasserstein and energy distance against fresh data, each next
  to the floor of fresh data against fresh data; for the mixture also the exact-truth
  errors of :func:`scoresde.toy.mixture_errors`.

Also reported: the NFE, the wall time, the fraction of samples with a value more than a
quarter of the data range outside it (for data in [-1, 1]: beyond +-1.5), and the bits/dim
(or NLL) of the split through the probability-flow ODE. :func:`write_report` writes
strictly valid JSON (NaN and infinities become ``null``).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import metrics
from .build import data_shape, load_dataset
from .checkpoint import Checkpoint
from .config import Config
from .data import ImageData, data_levels, to_levels, toy_data
from .distributed import finish, gather_cat, init_from_env, shard
from .likelihood import bits_per_dim, describe_likelihood, likelihood_options, log_likelihood
from .noise import LIKELIHOOD_DRAWS, SampleNoise
from .sampling import ADAPTIVE_STEPS, default_grid, is_adaptive, sample, warn_if_outside, with_data_range
from .sampling.grids import check_grid
from .score import ScoreModel, as_score_model
from .sde import SDE

OUTSIDE_MARGIN = 0.25  # a sample is "outside" when a value leaves the data range by a quarter of its width


def evaluate(
    checkpoint: str | Path | Checkpoint | ScoreModel,
    sampler: str | None = None,
    steps: int | None = None,
    options: Mapping[str, Any] | None = None,
    n: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    use_ema: bool = True,
    likelihood: bool | None = None,
    inception: str | Path | None = None,
    grid: str | Sequence[float] | None = None,
    rho: float | None = None,
    progress: bool = False,
    data_root: str | Path | None = None,
    likelihood_grid: Sequence[float] | None = None,
) -> tuple[dict[str, Any], Tensor]:
    """Sample a checkpoint (a path, an opened :class:`~scoresde.checkpoint.Checkpoint` or a model from
    :func:`scoresde.load`) and score the samples; returns ``(report, samples)``.

    ``sampler``, ``steps`` and ``options`` default to the checkpoint's ``[sampling]`` section
    (options only when the sampler is not overridden), ``n``, ``batch_size``, ``likelihood``
    and ``inception`` to its ``[eval]`` section. Under ``torchrun`` the samples are split
    across the processes; every process returns the same report and all samples. ``data_root``
    replaces the checkpoint's ``data.root``. ``likelihood_grid``: times for the fixed-grid likelihood solver (e.g.
    from :func:`scoresde.optimize_likelihood_grid`) instead of its default grid.
    """
    for name, value in (("n", n), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"evaluate's {name} must be an integer, got {value!r}")  # 10.7 is not 10
    model = _model(checkpoint, use_ema, device, data_root)
    cfg, sde = model.config, model.sde
    ev = cfg.eval
    sampler = sampler or cfg.sampling.sampler
    options = dict(cfg.sampling.options if sampler == cfg.sampling.sampler and options is None else options or {})
    n = ev.n if n is None else n
    batch_size = ev.batch_size if batch_size is None else batch_size
    likelihood = ev.likelihood if likelihood is None else bool(likelihood)
    inception = inception or ev.inception or None
    if n < 2 or batch_size < 1:
        raise ValueError(f"evaluate needs n >= 2 samples and a positive batch size, got {n} and {batch_size}")
    if likelihood_grid is not None and not likelihood:
        raise ValueError("a likelihood grid was given, but the likelihood is off (eval.likelihood / --no-likelihood)")
    if likelihood:  # the [eval] likelihood keys, before any sampling
        likelihood_options(ev.likelihood_method, ev.likelihood_steps, ev.probes, ev.truncation, ev.rtol, ev.atol)
        if likelihood_grid is not None:
            if ev.likelihood_method != "adams":
                raise ValueError(f"a likelihood grid is a grid of method adams; eval.likelihood_method is "
                                 f"{ev.likelihood_method!r}")  # fmt: skip
            likelihood_grid = check_grid(sde, likelihood_grid)
    toy = cfg.data.dataset == "toy"
    features = None if toy else _feature_space(cfg.data.dataset, data_shape(cfg), inception, device)
    adaptive = is_adaptive(sampler, options)
    if adaptive and steps is not None:
        raise ValueError(ADAPTIVE_STEPS)
    grid = default_grid(sampler, sde) if grid is None else grid
    steps = None if adaptive or not isinstance(grid, str) else (steps or cfg.sampling.steps)
    score = model

    rank, world = init_from_env()
    part = shard(n, rank, world)
    if progress is False and rank == 0:  # no progress bar (a log): say what runs
        print(
            f"evaluate: {n} samples with {sampler} ({'adaptive' if steps is None else steps} steps), "
            f"{'likelihood of the ' + ev.split + ' split, ' if likelihood else ''}{world} process(es)",
            flush=True,
        )
    start = time.perf_counter()
    x, nfe = torch.zeros(0, *data_shape(cfg)), 0
    if part.stop > part.start:
        x, nfe = sample(sde, score, (part.stop - part.start, *data_shape(cfg)), sampler=sampler, steps=steps,
                        eps=None if not isinstance(grid, str) else cfg.sampling.eps or None,
                        generator=SampleNoise(seed, range(part.start, part.stop)),
                        device=device, grid=grid, rho=rho, batch_size=batch_size, return_nfe=True,
                        progress=progress and rank == 0,
                        **with_data_range(sampler, options, model.data_range))  # fmt: skip
    seconds = time.perf_counter() - start
    x = gather_cat(x.cpu(), world)
    if rank == 0 and model.data_range is not None:
        warn_if_outside(x, model.data_range)  # FD of samples that left the data says little

    report: dict[str, Any] = {
        "checkpoint": model.source,
        "dataset": cfg.data.dataset,
        "weights": model.weights,
        "sampler": sampler,
        "steps": steps,
        "grid": grid if isinstance(grid, str) else [float(t) for t in grid],
        "rho": rho,
        "options": options,
        "n": n,
        "seed": seed,
        "nfe": nfe,
        "sampling_seconds": seconds,
        "samples_per_second": n / max(seconds, 1e-9),
        "processes": world,
        "reference_split": ev.split,
        "fraction_outside": _fraction_outside(x, tuple(cfg.data.data_range), toy),
    }
    if toy:
        report |= _toy_metrics(cfg, x, seed)
    elif features is not None:
        report |= _image_metrics(cfg, x, features)
    else:
        report |= {"features": None, "features_note": NO_FEATURES.format(dataset=cfg.data.dataset)}
    if likelihood:
        report |= _likelihood(cfg, sde, score, batch_size, seed, device, rank, world, likelihood_grid)
    finish(world)
    return report, x


def _model(checkpoint: str | Path | Checkpoint | ScoreModel, use_ema: bool, device: str,
           data_root: str | Path | None) -> ScoreModel:  # fmt: skip
    """The model to evaluate, loaded once (a given model is used as it is; ``data_root`` then replaces the
    ``data.root`` of a copy of its config)."""
    given = as_score_model(checkpoint)
    if given is None:
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.open(checkpoint, data_root=data_root)
        return ckpt.load(ema=use_ema, device=device)
    if not isinstance(given.config, Config):
        raise ValueError("evaluate needs the model's training config (its data and [eval] sections): load the model "
                         "with scoresde.load, or pass the checkpoint path")  # fmt: skip
    if data_root is not None:
        if not Path(data_root).is_dir():
            raise FileNotFoundError(f"data_root {data_root} is not a directory")
        given.config = copy.deepcopy(given.config)
        given.config.data.root = str(data_root)
    return given


NO_FEATURES = (
    "no FD/KID: no shipped feature space for the {dataset!r} data; pass the Inception-v3 FID weights with "
    "--inception PATH (or eval.inception): pt_inception-2015-12-05-6726825d.pth, the weights file of the "
    "pytorch-fid release (github.com/mseitzer/pytorch-fid, releases, fid_weights); scoresde never downloads it"
)


def _feature_space(dataset: str, shape: tuple[int, ...], inception: str | Path | None, device: str):
    """``images [N, C, H, W] in [0, 1] -> (features, class probabilities or None)``, checked before any sampling;
    ``None`` when there is no feature space for the data (no shipped one, no Inception weights given)."""
    if inception is not None:
        from .inception import InceptionV3Features, inception_features

        if shape[0] not in (1, 3):
            raise ValueError(f"Inception-v3 takes grey or RGB images, the data have {shape[0]} channels")
        net = InceptionV3Features(inception, device=device)
        return lambda images: (inception_features(images, net, device=device), None)
    if dataset == "digits":
        from .features import digits_features, load_digits_classifier

        net = load_digits_classifier(device=device)
        return lambda images: digits_features(images, net)
    return None  # no feature space: the report says so (NO_FEATURES) and gives what needs none


def _fraction_outside(x: Tensor, data_range: tuple[float, float], toy: bool) -> float | None:
    if toy or x.shape[0] == 0:
        return None
    lo, hi = data_range
    margin = OUTSIDE_MARGIN * (hi - lo)
    flat = x.reshape(x.shape[0], -1)
    outside = (flat < lo - margin).any(1) | (flat > hi + margin).any(1)
    return float(outside.double().mean())


def _unit(levels_x: Tensor, levels: int) -> Tensor:
    """Integer levels to the bin centres ``(k + 1/2) / L`` in ``[0, 1]``."""
    return (levels_x.double() + 0.5) / levels


def _image_metrics(cfg, x: Tensor, features) -> dict[str, Any]:
    reference: ImageData = load_dataset(cfg, cfg.eval.split)  # type: ignore[assignment]
    train: ImageData = load_dataset(cfg, "train")  # type: ignore[assignment]
    levels = data_levels(cfg.data.dataset)
    samples = _unit(to_levels(x, levels, tuple(cfg.data.data_range)), levels)
    floor_set = train.images[: x.shape[0]]
    f_samples, p_samples = features(samples.float())
    f_ref, p_ref = features(_unit(reference.images, levels).float())
    f_floor, _ = features(_unit(floor_set, levels).float())
    subset = min(1000, f_samples.shape[0], f_ref.shape[0], f_floor.shape[0])
    gen = torch.Generator().manual_seed(0)
    kid, kid_std = metrics.kid(f_samples, f_ref, subsets=100, subset_size=subset, generator=gen)
    kid_floor, kid_floor_std = metrics.kid(f_floor, f_ref, subsets=100, subset_size=subset, generator=gen)
    fd, fd_floor = metrics.frechet_distance(f_samples, f_ref), metrics.frechet_distance(f_floor, f_ref)
    out: dict[str, Any] = {
        "features": "inception-v3" if p_samples is None else "digits-classifier",
        "reference_size": int(f_ref.shape[0]),
        "floor_size": int(f_floor.shape[0]),
        "fd": fd,
        "fd_floor": fd_floor,
        "fd_ratio": fd / fd_floor if fd_floor > 0 else None,
        "kid": kid,
        "kid_std": kid_std,
        "kid_floor": kid_floor,
        "kid_floor_std": kid_floor_std,
    }
    if p_samples is not None:
        classes = p_samples.argmax(1)
        counts = torch.bincount(classes, minlength=p_samples.shape[1]).double()
        out["class_histogram"] = (counts / len(classes)).tolist()
        out["mean_confidence"] = float(p_samples.max(1).values.mean())
        out["reference_mean_confidence"] = float(p_ref.max(1).values.mean())
    return out


def _toy_metrics(cfg, x: Tensor, seed: int) -> dict[str, Any]:
    n = x.shape[0]
    fresh = toy_data(cfg.data.toy, n, generator=torch.Generator().manual_seed(10_000 + seed)).double()
    floor = toy_data(cfg.data.toy, n, generator=torch.Generator().manual_seed(20_000 + seed)).double()
    x = x.double()
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {
        "reference": "fresh data",
        "mmd": metrics.mmd(x, fresh),
        "mmd_floor": metrics.mmd(floor, fresh),
        "sliced_wasserstein": metrics.sliced_wasserstein(x, fresh, generator=gen),
        "sliced_wasserstein_floor": metrics.sliced_wasserstein(floor, fresh, generator=gen),
        "energy_distance": metrics.energy_distance(x, fresh),
        "energy_distance_floor": metrics.energy_distance(floor, fresh),
    }
    if cfg.data.toy == "mixture":
        from .toy import demo_mixture, mixture_errors

        mixture = demo_mixture()
        truth = mixture.sample(200_000, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
        out["mixture_errors"] = mixture_errors(mixture, x, truth)
    return out


def _likelihood(cfg, sde: SDE, score, batch_size: int, seed: int, device: str, rank: int, world: int,
                grid: list[float] | None = None) -> dict:  # fmt: skip
    """Bits/dim (images) or NLL in nats (2-D) of the split; per-sample streams keep it batch-independent."""
    ev = cfg.eval
    data = load_dataset(cfg, ev.split)
    part = shard(len(data), rank, world)
    kw = likelihood_options(ev.likelihood_method, ev.likelihood_steps, ev.probes, ev.truncation, ev.rtol, ev.atol)
    kw["batch_size"] = batch_size
    if grid is not None:  # the fixed-grid solver on given times (checked against the SDE before sampling)
        del kw["steps"]
        kw["grid"] = grid
    start, values, nfe = time.perf_counter(), torch.zeros(0), 0
    noise = SampleNoise(seed, range(part.start, part.stop), draws=LIKELIHOOD_DRAWS)  # repeats continue the streams
    for _ in range(ev.repeats if part.stop > part.start else 0):
        if isinstance(data, Tensor):
            logp, _, k = log_likelihood(sde, score, data[part].to(device), generator=noise, **kw)
            value = -logp
        else:
            value, _, k = bits_per_dim(sde, score, data.images[part].to(device), levels=data.levels,
                                       data_range=tuple(cfg.data.data_range), generator=noise, **kw)  # fmt: skip
        values = torch.cat([values, value.detach().cpu().double()])
        nfe = max(nfe, k)
    values = gather_cat(values, world)
    name = "nll_nats" if isinstance(data, Tensor) else "bits_per_dim"
    mean = float(values.mean())
    stderr = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else None
    seconds = time.perf_counter() - start
    return {name: mean, f"{name}_stderr": stderr, "likelihood_nfe": nfe, "likelihood_seconds": seconds,
            "likelihood_method": describe_likelihood(kw)}  # fmt: skip


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``report`` as strictly valid JSON (``allow_nan=False``), atomically."""
    from .plotting import atomic_write

    text = json.dumps(strict_json(report), indent=2, allow_nan=False) + "\n"
    path = Path(path)
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path


def summary(report: Mapping[str, Any]) -> str:
    """A few human-readable lines of a report."""
    head = f"{report['n']} samples, {report['sampler']}" + (f" {report['steps']} steps" if report["steps"] else "")
    lines = [f"{head}: {report['nfe']} NFE, {report['sampling_seconds']:.1f} s"]
    if "features_note" in report:
        lines.append(report["features_note"])
    if report.get("fraction_outside") is not None:
        outside = 100 * report["fraction_outside"]
        lines.append(f"samples with a value outside the data range by > 25 %: {outside:.1f} %")
    if "fd" in report:
        ratio = report["fd_ratio"]
        kid = f"KID {report['kid']:.4g} (floor {report['kid_floor']:.4g})"
        lines.append(f"FD {report['fd']:.3f} (floor {report['fd_floor']:.3f}, ratio {ratio:.2f})  {kid}  "
                     f"[{report['features']}]")  # fmt: skip
        if "mean_confidence" in report:
            hist = " ".join(f"{100 * h:.0f}" for h in report["class_histogram"])
            lines.append(f"classifier confidence {report['mean_confidence']:.3f} "
                         f"(real {report['reference_mean_confidence']:.3f}); classes % {hist}")  # fmt: skip
    elif "mmd" in report:
        sw, sw_floor = report["sliced_wasserstein"], report["sliced_wasserstein_floor"]
        energy, energy_floor = report["energy_distance"], report["energy_distance_floor"]
        lines.append(f"MMD {report['mmd']:.2e} (floor {report['mmd_floor']:.2e})  sliced W2 {sw:.4f} "
                     f"(floor {sw_floor:.4f})  energy {energy:.2e} (floor {energy_floor:.2e})")  # fmt: skip
    how = f"  ({report['likelihood_nfe']} NFE; {report['likelihood_method']})" if "likelihood_method" in report else ""
    if "bits_per_dim" in report:
        lines.append(f"{report['reference_split']} bits/dim {report['bits_per_dim']:.4f}{how}")
    if "nll_nats" in report:
        lines.append(f"{report['reference_split']} NLL {report['nll_nats']:.4f} nats{how}")
    return "\n".join(lines)
