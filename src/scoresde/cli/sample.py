"""The ``sample`` command: draw samples from a checkpoint, optionally of one class (classifier-free or classifier
guidance), split over ``torchrun`` processes with one noise stream per sample."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .args import (
    DEVICE_HELP,
    FORMATTER,
    class_choice,
    grid_arguments,
    guidance_scale,
    positive_int,
    progress_flag,
    seed,
    show_progress,
    step_count,
)
from .common import grid_choice, inference_setup, save_samples


def add_parsers(sub) -> None:
    """Add ``sample`` to the subparsers."""
    fmt = FORMATTER
    sample = sub.add_parser("sample", help="draw samples from a checkpoint", formatter_class=fmt,
                            description="Draw samples from a checkpoint (a file or a checkpoints folder: the newest). "
                                        "The output type follows --out: .png (image grid or 2-D scatter) or .npz.",
                            epilog="example:\n  scoresde sample outputs/digits/checkpoints --sampler ode -n 64 "
                                   "--out ode.png\n  scoresde sample ckpt.safetensors --sampler pc --option snr=0.1 "
                                   "--out pc.npz")  # fmt: skip
    sample.add_argument("checkpoint")
    sample.add_argument("--sampler", default=None, help="sampler name (default: the config's)")
    sample.add_argument("--steps", type=step_count, default=None,
                        help="steps, the NFE budget for the fast solvers (default: the config's; not for the adaptive "
                             "samplers adaptive_sde and ode's rk45)")  # fmt: skip
    sample.add_argument("-n", type=positive_int, default=None, help="number of samples (default: sampling.n, 64)")
    sample.add_argument("--batch-size", type=positive_int, default=None,
                        help="samples per batch (default: eval.batch_size); samples do not depend on it")  # fmt: skip
    sample.add_argument("--out", default="samples.png", help="output file, .png or .npz")
    sample.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    grid_arguments(sample)
    sample.add_argument("--seed", type=seed, default=0, help="sample i of a seed is the same in any batch or process")
    sample.add_argument("--device", default="auto", help=DEVICE_HELP)
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--class", dest="klass", type=class_choice, default=None, metavar="K|all",
                        help="draw class K (or 'all': sample i from class i mod the number of classes): "
                             "classifier-free guidance of a class-conditional checkpoint, or classifier guidance "
                             "with --classifier")  # fmt: skip
    sample.add_argument("--guidance", type=guidance_scale, default=None, metavar="W",
                        help="guidance weight with --class: 0 unconditional, 1 (default) the exact conditional, "
                             ">1 sharper classes")  # fmt: skip
    sample.add_argument("--classifier", default=None, metavar="CHECKPOINT",
                        help="a noise-conditional classifier (scoresde train-classifier; trained under the same "
                             "SDE) to guide an unconditional checkpoint with --class")  # fmt: skip
    progress_flag(sample, "while sampling")


def _guidance_plan(args, cfg, path: Path) -> tuple[list[int], int, Any] | None:
    """Check ``--class``, ``--guidance`` and ``--classifier`` against the checkpoint (metadata headers only).

    Returns ``None`` (no guidance) or ``(classes to draw, number of classes, opened classifier checkpoint or None)``.
    """
    from ..build import build_sde, data_shape, same_process
    from ..checkpoint import CLASSIFIER_FORMAT, Checkpoint

    if args.klass is None:
        for flag, value in (("--guidance", args.guidance), ("--classifier", args.classifier)):
            if value is not None:
                raise ValueError(f"{flag} needs --class K (the class to draw) or --class all")
        return None
    classifier = None
    if args.classifier is not None:
        classifier = Checkpoint.open(args.classifier, CLASSIFIER_FORMAT)
        clf_cfg = classifier.config
        if not same_process(clf_cfg, cfg):
            raise ValueError(f"--classifier {classifier.path} was trained under another SDE ({build_sde(clf_cfg)!r}) "
                             f"than the checkpoint ({build_sde(cfg)!r}); train it with the model's [sde]")  # fmt: skip
        if (data_shape(clf_cfg), clf_cfg.data.data_range) != (data_shape(cfg), cfg.data.data_range):
            raise ValueError(f"--classifier {classifier.path} was trained on data of another shape or range than the "
                             f"checkpoint's {data_shape(cfg)} in {cfg.data.data_range}")  # fmt: skip
        num_classes, what = clf_cfg.classifier.num_classes, "--classifier"
    else:
        num_classes, what = cfg.model.net.get("num_classes"), "checkpoint"
        if num_classes is None:
            raise ValueError(f"checkpoint {path} is not class-conditional (model.net.num_classes is unset): guide it "
                             "with a noise-conditional classifier (--classifier CLASSIFIER_CHECKPOINT, from scoresde "
                             "train-classifier) or train a class-conditional model")  # fmt: skip
        if args.guidance not in (None, 1.0) and cfg.training.p_uncond == 0:
            raise ValueError(f"--guidance {args.guidance:g} needs the unconditional score too, but checkpoint {path} "
                             "was trained without label dropout (training.p_uncond = 0); use --guidance 1, the plain "
                             "conditional")  # fmt: skip
    if args.klass != "all" and args.klass >= num_classes:
        raise ValueError(f"--class {args.klass} is out of range: the {what} has {num_classes} classes "
                         f"(0 to {num_classes - 1})")  # fmt: skip
    classes = list(range(num_classes)) if args.klass == "all" else [args.klass]
    return classes, num_classes, classifier


def sample_command(args) -> int:
    from ..distributed import finish, gather_cat, init_from_env, shard
    from ..noise import SampleNoise
    from ..sampling import ADAPTIVE_STEPS, is_adaptive, sample, warn_if_outside, with_data_range
    from ..sampling.options import parse_sampler_options

    if args.sampler is not None:  # a named sampler's options are checked before the checkpoint is looked up
        parse_sampler_options(args.sampler, args.option)
    ckpt, cfg, device = inference_setup(args, (".png", ".npz"))
    plan = _guidance_plan(args, cfg, ckpt.path)
    sampler = args.sampler or cfg.sampling.sampler
    options = dict(cfg.sampling.options) if args.sampler is None else {}  # checked with the config
    options |= parse_sampler_options(sampler, args.option)
    if is_adaptive(sampler, options) and args.steps is not None:
        raise ValueError(ADAPTIVE_STEPS)
    grid, rho = grid_choice(args, ckpt.path, cfg, sampler, options)
    steps = (
        None
        if is_adaptive(sampler, options) or not isinstance(grid, (str, type(None)))
        else (args.steps if args.steps is not None else cfg.sampling.steps)
    )
    progress = show_progress(args.progress)
    n = args.n or cfg.sampling.n
    rank, world = init_from_env()
    part = shard(n, rank, world)
    if rank == 0:  # the plan, before the model loads
        if steps is not None:
            budget = f"steps {steps}"
        else:
            budget = "adaptive steps" if isinstance(grid, (str, type(None))) else f"a grid of {len(grid) - 1} steps"
        print(f"sampling {n} with {sampler} ({budget}) on {device}, {world} process(es)", flush=True)
    model = ckpt.load(ema=not args.no_ema, device=device)
    sde, score = model.sde, model
    options = with_data_range(sampler, options, model.data_range)  # thresholding into the model's range
    eps = cfg.sampling.eps or None
    batch_size = args.batch_size or cfg.eval.batch_size
    shape = model.data_shape
    indices = torch.arange(part.start, part.stop)
    groups = [(score, indices)]  # (score function, global indices of its samples): sample i keeps noise stream i
    labels, scale = None, 1.0 if args.guidance is None else args.guidance
    if plan is not None:
        classes, num_classes, classifier = plan
        if classifier is not None:
            from ..classifier import load_classifier

            classifier = load_classifier(classifier, device=device)[1]  # the opened checkpoint: read once
        labels = _class_labels(indices, args.klass, num_classes)
        groups = [(_guided(score, classifier, k, scale), indices[labels == k]) for k in classes]
    start = time.perf_counter()
    x, nfe = torch.zeros(len(indices), *shape, device=device), 0
    for score_fn, members in groups:
        if len(members):
            x[(members - part.start).to(device)], group_nfe = sample(
                sde, score_fn, (len(members), *shape), sampler=sampler, steps=steps, grid=grid, rho=rho,
                eps=None if isinstance(grid, list) else eps,
                generator=SampleNoise(args.seed, members), device=device, batch_size=batch_size, return_nfe=True,
                progress=progress and rank == 0, **options)  # fmt: skip
            nfe = max(nfe, group_nfe)
    x = gather_cat(x, world)
    labels = None if labels is None else _class_labels(torch.arange(n), args.klass, num_classes)
    finish(world)
    if rank != 0:
        return 0
    if model.data_range is not None:
        warn_if_outside(x, model.data_range)  # once, over every rank's samples
    seconds = time.perf_counter() - start
    what = ""
    if plan is not None:
        kind = "classifier" if plan[2] is not None else "classifier-free"
        what = f" of class {args.klass} ({kind} guidance {scale:g})"
    out = save_samples(x, args.out, cfg, f"{sampler} ({nfe} NFE)", labels=labels,
                        nrow=plan[1] if plan and args.klass == "all" else None)  # fmt: skip
    print(f"{n} samples{what} with {sampler} ({nfe} NFE, {seconds:.1f} s) -> {out}")
    return 0


def _class_labels(indices: torch.Tensor, klass: int | str, num_classes: int) -> torch.Tensor:
    """The class of each sample index: ``klass``, or ``i mod num_classes`` for ``all``."""
    return indices % num_classes if klass == "all" else torch.full_like(indices, klass)


def _guided(score, classifier, k: int, scale: float):
    """Class ``k`` at guidance weight ``scale``: classifier guidance with a classifier, else classifier-free."""
    from ..guidance import classifier_free_guided, classifier_guided

    if classifier is None:
        return classifier_free_guided(score, k, scale)
    return classifier_guided(score, classifier, k, scale)


COMMANDS = {"sample": sample_command}
