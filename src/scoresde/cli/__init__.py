"""Command-line interface: ``scoresde train | sample | likelihood | evaluate | demo | train-classifier``,
the tasks of :mod:`scoresde.cli.tasks` (``inpaint | colorize | encode | decode | interpolate``),
``optimize-grid`` (:mod:`scoresde.cli.grids`) and ``convert-official`` (:mod:`scoresde.cli.official`)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .grids import COMMANDS as GRID_COMMANDS
from .grids import add_grid_parser
from .official import COMMANDS as OFFICIAL_COMMANDS
from .official import add_official_parser
from .tasks import COMMANDS as TASK_COMMANDS
from .tasks import add_task_parsers

TASKS = TASK_COMMANDS | GRID_COMMANDS | OFFICIAL_COMMANDS

EPILOG = """examples:
  scoresde train configs/digits_vp.toml --workdir outputs/digits
  scoresde train configs/toy_mixture.toml --workdir runs/toy --set training.lr=1e-3 --set training.n_iters=2000
  scoresde sample outputs/digits/checkpoints --sampler pc --steps 1000 -n 64 --out grid.png
  scoresde train-classifier configs/digits_classifier.toml --workdir outputs/digits_classifier
  scoresde sample outputs/digits/checkpoints --class 3 --guidance 2 --classifier outputs/digits_classifier/checkpoints
  scoresde likelihood outputs/digits/checkpoints --split test --repeats 5
  scoresde evaluate outputs/digits/checkpoints --sampler ddim --steps 50 -n 1000 --out report.json
  scoresde inpaint outputs/digits/checkpoints --missing bottom -n 16 --out inpainted.png
  scoresde encode outputs/digits/checkpoints -n 8 --out latents.npz
  scoresde interpolate outputs/digits/checkpoints -n 4 --points 8 --out path.png
  scoresde convert-official checkpoint_8.pth --config vp/cifar10_ddpmpp_continuous --out runs/vp_ddpmpp
  scoresde demo --out outputs/demo
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _guidance_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _class_choice(text: str) -> int | str:
    """``--class``: a class index ``K >= 0`` or ``all``."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a class index >= 0 or 'all', got {text!r}")
    return value


def _progress_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help=f"show a progress bar {what} (default: when stderr is a terminal)")  # fmt: skip


def _show_progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _run_arguments(parser: argparse.ArgumentParser, config_help: str, workdir_help: str, deleted: str) -> None:
    """The arguments of a training command: config, workdir, overrides, resume or overwrite, progress."""
    parser.add_argument("config", help=config_help)
    parser.add_argument("--workdir", required=True, help=workdir_help)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    parser.add_argument("--no-resume", action="store_true",
                        help="start a new run; refused if WORKDIR has checkpoints (see --overwrite)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help=f"start over: delete WORKDIR's {deleted} first")
    _progress_flag(parser, "while training")


def _data_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="the dataset's folder on this machine (default: the checkpoint's data.root)")  # fmt: skip


def _grid_arguments(parser: argparse.ArgumentParser, positive_float) -> None:
    parser.add_argument(
        "--grid",
        default=None,
        metavar="KIND|NAME|FILE",
        help="time grid: uniform, quadratic, log_snr or karras, a grid saved by optimize-grid "
        "(its name) or a grid file (default: the sampler's, log_snr for the fast solvers)",
    )
    parser.add_argument("--rho", type=positive_float, default=None, help="the karras grid's exponent (default 7)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="scoresde", description="Score-based generative modeling through SDEs.", epilog=EPILOG,
                     formatter_class=fmt)  # fmt: skip
    parser.add_argument("--threads", type=_positive_int, default=2, help="torch CPU threads (default 2)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a score model from a config file", formatter_class=fmt,
                           description="Train a score model. Resumes from the newest checkpoint in WORKDIR.",
                           epilog="example:\n  scoresde train configs/digits_vp.toml --workdir outputs/digits "
                                  "--set training.n_iters=500")  # fmt: skip
    _run_arguments(train, "TOML config file (see configs/)", "folder for checkpoints, logs and samples",
                   "checkpoints, log.jsonl, loss.png and samples/")  # fmt: skip

    sample = sub.add_parser("sample", help="draw samples from a checkpoint", formatter_class=fmt,
                            description="Draw samples from a checkpoint (a file or a checkpoints folder: the newest). "
                                        "The output type follows --out: .png (image grid or 2-D scatter) or .npz.",
                            epilog="example:\n  scoresde sample outputs/digits/checkpoints --sampler ode -n 64 "
                                   "--out ode.png\n  scoresde sample ckpt.safetensors --sampler pc --option snr=0.1 "
                                   "--out pc.npz")  # fmt: skip
    sample.add_argument("checkpoint")
    sample.add_argument("--sampler", default=None, help="sampler name (default: the config's)")
    sample.add_argument("--steps", type=_positive_int, default=None,
                        help="steps, the NFE budget for the fast solvers (default: the config's; not for the adaptive "
                             "samplers adaptive_sde and ode's rk45)")  # fmt: skip
    sample.add_argument("-n", type=_positive_int, default=None, help="number of samples (default: sampling.n, 64)")
    sample.add_argument("--batch-size", type=_positive_int, default=None,
                        help="samples per batch (default: eval.batch_size); samples do not depend on it")  # fmt: skip
    sample.add_argument("--out", default="samples.png", help="output file, .png or .npz")
    sample.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    _grid_arguments(sample, _positive_float)
    sample.add_argument("--seed", type=_seed, default=0, help="sample i of a seed is the same in any batch or process")
    sample.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--class", dest="klass", type=_class_choice, default=None, metavar="K|all",
                        help="draw class K (or 'all': sample i from class i mod the number of classes): "
                             "classifier-free guidance of a class-conditional checkpoint, or classifier guidance "
                             "with --classifier")  # fmt: skip
    sample.add_argument("--guidance", type=_guidance_scale, default=None, metavar="W",
                        help="guidance weight with --class: 0 unconditional, 1 (default) the exact conditional, "
                             ">1 sharper classes")  # fmt: skip
    sample.add_argument("--classifier", default=None, metavar="CHECKPOINT",
                        help="a noise-conditional classifier (scoresde train-classifier; trained under the same "
                             "SDE) to guide an unconditional checkpoint with --class")  # fmt: skip
    _progress_flag(sample, "while sampling")

    lik = sub.add_parser("likelihood", help="bits/dim (images) or NLL (2-D) of a data split", formatter_class=fmt,
                         description="Exact likelihood through the probability-flow ODE, with uniform "
                                     "dequantization for images, averaged over --repeats passes.",
                         epilog="example:\n  scoresde likelihood outputs/digits/checkpoints --split test "
                                "--repeats 5")  # fmt: skip
    lik.add_argument("checkpoint")
    lik.add_argument("--split", default=None, choices=["train", "test"], help="default: the config's eval.split")
    lik.add_argument("--repeats", type=_positive_int, default=None, help="default: the config's eval.repeats")
    lik.add_argument("--batch-size", type=_positive_int, default=None, help="default: the config's eval.batch_size")
    lik.add_argument("--rtol", type=_positive_float, default=None, help="default: the config's eval.rtol (1e-5)")
    lik.add_argument("--atol", type=_positive_float, default=None, help="default: the config's eval.atol (1e-5)")
    lik.add_argument("--exact", action="store_true", help="exact divergence instead of Hutchinson")
    lik.add_argument("--seed", type=_seed, default=0)
    lik.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    lik.add_argument("--out", default=None, help="also write the result as JSON here (.json)")
    _data_root_argument(lik)
    _progress_flag(lik, "over the batches")

    ev = sub.add_parser("evaluate", help="sample a checkpoint and score the samples (FD, KID, bits/dim)",
                        formatter_class=fmt,
                        description="Draw N samples (in batches, one noise stream per sample) and report the "
                                    "Fréchet distance and KID against the test split next to their floor (N "
                                    "training images against the test split), the classifier's class histogram "
                                    "and confidence, NFE, wall time and the bits/dim of the split. 2-D toy "
                                    "checkpoints get MMD, sliced Wasserstein and energy distance against fresh "
                                    "data. Defaults come from the checkpoint's [sampling] and [eval] sections.",
                        epilog="example:\n  scoresde evaluate outputs/digits/checkpoints --sampler ode --steps 50 "
                               "--option method=heun -n 1000 --out report.json --samples-out samples.png\n"
                               "  scoresde evaluate cifar_ckpt.safetensors --inception pt_inception-2015-12-05-"
                               "6726825d.pth -n 10000")  # fmt: skip
    ev.add_argument("checkpoint")
    ev.add_argument("--sampler", default=None, help="sampler name (default: the config's)")
    ev.add_argument("--steps", type=_positive_int, default=None, help="steps (default: the config's)")
    ev.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    _grid_arguments(ev, _positive_float)
    ev.add_argument("-n", type=_positive_int, default=None, help="number of samples (default: eval.n, 1000)")
    ev.add_argument("--batch-size", type=_positive_int, default=None, help="default: the config's eval.batch_size")
    ev.add_argument("--seed", type=_seed, default=0)
    ev.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    ev.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    ev.add_argument("--likelihood", action=argparse.BooleanOptionalAction, default=None,
                    help="also report the split's bits/dim or NLL (default: the config's eval.likelihood)")  # fmt: skip
    ev.add_argument("--inception", default=None, metavar="PATH",
                    help="Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth): the feature space for "
                         "images other than the digits; never downloaded")  # fmt: skip
    ev.add_argument("--out", default=None, help="write the report here (.json; strictly valid JSON)")
    ev.add_argument("--samples-out", default=None, help="also save the samples: .png (the first 64) or .npz")
    _data_root_argument(ev)
    _progress_flag(ev, "while sampling")

    clf = sub.add_parser("train-classifier", help="train a noise-conditional classifier for classifier guidance",
                         formatter_class=fmt,
                         description="Train the noise-conditional classifier p_t(y | x) of a config's [classifier] "
                                     "section on the data of its [data] section perturbed by its [sde] (use the "
                                     "score model's SDE). Resumes from the newest checkpoint in WORKDIR; ends with "
                                     "the test accuracy at a few times, also written to WORKDIR/accuracy.json.",
                         epilog="example:\n  scoresde train-classifier configs/digits_classifier.toml --workdir "
                                "outputs/digits_classifier\n  scoresde sample outputs/digits/checkpoints --class 3 "
                                "--classifier outputs/digits_classifier/checkpoints --out three.png")  # fmt: skip
    _run_arguments(clf, "TOML config file with [sde], [data] and [classifier] (see configs/)",
                   "folder for checkpoints, log.jsonl and accuracy.json",
                   "classifier checkpoints, log.jsonl and accuracy.json")  # fmt: skip

    add_task_parsers(sub, fmt, _positive_int, _positive_float, _seed, _progress_flag)
    add_grid_parser(sub, fmt, _positive_int, _seed, _progress_flag)
    add_official_parser(sub, fmt)

    demo = sub.add_parser("demo", help="sample a 2-D Gaussian mixture with every sampler using its exact score",
                          formatter_class=fmt, epilog="example:\n  scoresde demo --out outputs/demo -n 5000",
                          description="Sample a known 2-D Gaussian mixture with every sampler (VP, sub-VP, VE) "
                                      "using its exact score; write a PNG and print the errors.")  # fmt: skip
    demo.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    demo.add_argument("-n", type=int, default=5000, help="samples per sampler (default 5000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--progress", action="store_true")
    demo.add_argument("--quick", action="store_true", help="a smoke run with 10x fewer steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (2 with one line on stderr for bad input or a failed write)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2, already reported in one line)
        return done.code if isinstance(done.code, int) else 2
    torch.set_num_threads(args.threads)
    try:
        commands = {"train": _train, "sample": _sample, "likelihood": _likelihood, "evaluate": _evaluate,
                    "demo": _demo, "train-classifier": _train_classifier}  # fmt: skip
        if args.command in TASKS:
            return TASKS[args.command](args, _show_progress)
        return commands[args.command](args)
    except OSError as err:  # a path: missing, in the way, not writable, a full disk
        print(f"scoresde {args.command}: error: {_one_line(_os_error(err))}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, FloatingPointError) as err:
        print(f"scoresde {args.command}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scoresde {args.command}: interrupted (checkpoints written so far are intact)", file=sys.stderr)
        return 130


def _os_error(err: OSError) -> str:
    """``PATH: reason`` for an OSError from the system (a message of ours is kept as it is)."""
    if err.strerror is None:
        return str(err)
    if err.filename is None:
        return err.strerror
    target = f" -> {err.filename2}" if err.filename2 is not None else ""
    return f"{err.filename}{target}: {err.strerror}"


def _one_line(message: str) -> str:
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def _train(args) -> int:
    from ..config import load_config
    from ..train import train

    cfg = load_config(args.config, args.set)
    start = time.perf_counter()
    final = train(cfg, args.workdir, resume=not args.no_resume, progress=args.progress, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {cfg.training.n_iters} steps in {time.perf_counter() - start:.0f} s; checkpoint {final}")
    return 0


def _inference_setup(args, suffixes: tuple[str, ...], data: bool = False):
    """Checks shared by ``sample`` and ``likelihood``, all before any work: the output path, the
    device, the checkpoint (opened once: its header) and, with ``data``, the dataset's files.
    Returns ``(checkpoint, config, device)``; ``checkpoint.load`` then reads the weights once."""
    from ..build import check_config, pick_device
    from ..checkpoint import Checkpoint
    from ..plotting import check_output_file

    if args.out is not None:
        check_output_file(args.out, suffixes, "--out")
    device = pick_device(args.device)
    ckpt = Checkpoint.open(args.checkpoint, data_root=getattr(args, "data_root", None))
    return ckpt, check_config(ckpt.config, training=False, data=data), device


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


def _sample(args) -> int:
    from ..build import is_adaptive, parse_sampler_options
    from ..distributed import finish, gather_cat, init_from_env, shard
    from ..noise import SampleNoise
    from ..sampling import sample

    ckpt, cfg, device = _inference_setup(args, (".png", ".npz"))
    plan = _guidance_plan(args, cfg, ckpt.path)
    sampler = args.sampler or cfg.sampling.sampler
    options = dict(cfg.sampling.options) if args.sampler is None else {}  # checked with the config
    options |= parse_sampler_options(sampler, args.option)
    if is_adaptive(sampler, options) and args.steps is not None:
        raise ValueError("--steps does not apply to the adaptive samplers (adaptive_sde, ode's rk45: they pick their "
                         "own steps); "
                         "set --option rtol=/atol=, or --option method=euler|heun|rk4 for fixed steps")  # fmt: skip
    grid, rho = _grid_choice(args, ckpt.path, cfg, sampler, options)
    steps = (
        None
        if is_adaptive(sampler, options) or not isinstance(grid, (str, type(None)))
        else (args.steps if args.steps is not None else cfg.sampling.steps)
    )
    progress = _show_progress(args.progress)
    n = args.n or cfg.sampling.n
    rank, world = init_from_env()
    part = shard(n, rank, world)
    model = ckpt.load(ema=not args.no_ema, device=device)
    sde, score = model.sde, model
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
    seconds = time.perf_counter() - start
    what = ""
    if plan is not None:
        kind = "classifier" if plan[2] is not None else "classifier-free"
        what = f" of class {args.klass} ({kind} guidance {scale:g})"
    out = _save_samples(x, args.out, cfg, f"{sampler} ({nfe} NFE)", labels=labels,
                        nrow=plan[1] if plan and args.klass == "all" else None)  # fmt: skip
    print(f"{n} samples{what} with {sampler} ({nfe} NFE, {seconds:.1f} s) -> {out}")
    return 0


def _grid_choice(args, path: Path, cfg, sampler: str, options: dict) -> tuple[str | list[float] | None, float | None]:
    """``--grid`` and ``--rho`` checked against the sampler and the checkpoint, before the model loads."""
    from ..build import build_sde, is_adaptive
    from .grids import resolve_grid

    if is_adaptive(sampler, options) and (args.grid is not None or args.rho is not None):
        raise ValueError(f"--grid/--rho do not apply to the adaptive sampler {sampler!r} (it picks its own steps)")
    if args.rho is not None and args.grid != "karras":
        raise ValueError("--rho sets the karras grid's exponent; pass --grid karras with it")
    return resolve_grid(args.grid, path, build_sde(cfg), args.steps is not None), args.rho


def _class_labels(indices: torch.Tensor, klass: int | str, num_classes: int) -> torch.Tensor:
    """The class of each sample index: ``klass``, or ``i mod num_classes`` for ``all``."""
    return indices % num_classes if klass == "all" else torch.full_like(indices, klass)


def _guided(score, classifier, k: int, scale: float):
    """Class ``k`` at guidance weight ``scale``: classifier guidance with a classifier, else classifier-free."""
    from ..guidance import classifier_free_guided, classifier_guided

    if classifier is None:
        return classifier_free_guided(score, k, scale)
    return classifier_guided(score, classifier, k, scale)


def _likelihood(args) -> int:
    from tqdm.auto import tqdm

    from ..build import load_dataset
    from ..distributed import finish, gather_cat, gather_sum, init_from_env, shard
    from ..evaluate import write_report
    from ..likelihood import bits_per_dim, log_likelihood
    from ..noise import LIKELIHOOD_DRAWS, SampleNoise

    ckpt, cfg, device = _inference_setup(args, (".json",), data=True)
    ev = cfg.eval
    split, repeats = args.split or ev.split, args.repeats or ev.repeats
    batch_size = args.batch_size or ev.batch_size
    progress = _show_progress(args.progress)
    rank, world = init_from_env()
    model = ckpt.load(device=device)
    sde, score = model.sde, model
    data = load_dataset(cfg, split)
    part = shard(len(data), rank, world)
    # one stream per data point: the result does not depend on the batch size or the number of processes
    noise = SampleNoise(args.seed, range(part.start, part.stop), draws=LIKELIHOOD_DRAWS)
    kw = {"rtol": args.rtol or ev.rtol, "atol": args.atol or ev.atol,
          "divergence": "exact" if args.exact else "hutchinson"}  # fmt: skip
    start = time.perf_counter()
    per_repeat, total_nfe = [], 0
    n_batches = -(-(part.stop - part.start) // batch_size)
    bar = tqdm(total=repeats * n_batches, desc="likelihood", unit="batch", dynamic_ncols=True,
               disable=not (progress and rank == 0))  # fmt: skip
    for _ in range(repeats):
        values = [torch.zeros(0)]
        for lo in range(part.start, part.stop, batch_size):
            hi = min(lo + batch_size, part.stop)
            gen = noise.subset(lo - part.start, hi - part.start)
            if cfg.data.dataset == "toy":
                batch = data[lo:hi].to(device)
                logp, _, nfe = log_likelihood(sde, score, batch, generator=gen, **kw)
                values.append(-logp.cpu().double())
            else:
                batch = data.images[lo:hi].to(device)
                bpd, _, nfe = bits_per_dim(sde, score, batch, levels=data.levels, data_range=tuple(cfg.data.data_range),
                                           dequantize_data=True, generator=gen, **kw)  # fmt: skip
                values.append(bpd.cpu().double())
            total_nfe += nfe
            bar.update(1)
            bar.set_postfix(nfe=total_nfe, refresh=False)
        noise.draws = gen.draws  # the next repeat continues every stream
        per_repeat.append(float(gather_cat(torch.cat(values), world).mean()))
    bar.close()
    total_nfe = int(gather_sum(total_nfe, world))
    finish(world)
    if rank != 0:
        return 0
    unit = "nats/sample (negative log-likelihood)" if cfg.data.dataset == "toy" else "bits/dim"
    mean = float(np.mean(per_repeat))
    sem = float(np.std(per_repeat, ddof=1) / np.sqrt(len(per_repeat))) if len(per_repeat) > 1 else None
    result = {"split": split, "repeats": per_repeat, "mean": mean, "stderr": sem, "unit": unit,
              "nfe": total_nfe, "seconds": time.perf_counter() - start}  # fmt: skip
    if cfg.data.dataset != "toy":
        result["uniform_bound_bits_per_dim"] = math.log2(data.levels)
    print(f"{split} {unit}: {mean:.4f}" + (f" +- {sem:.4f}" if len(per_repeat) > 1 else "")
          + f"  ({repeats} repeat(s), {total_nfe} NFE, {result['seconds']:.0f} s)")  # fmt: skip
    if "uniform_bound_bits_per_dim" in result:
        print(f"(a uniform model over the {data.levels} levels scores {result['uniform_bound_bits_per_dim']:.3f})")
    if args.out:
        write_report(result, args.out)
    return 0


def _save_samples(x: torch.Tensor, out: str | Path, cfg, title: str, labels: torch.Tensor | None = None,
                  nrow: int | None = None) -> Path:  # fmt: skip
    """Samples as a .npz (model-space values, integer levels for images, and the class labels of guided
    samples) or a .png (grid or 2-D scatter; with ``nrow`` classes, one class per column over ``nrow`` rows)."""
    from ..data import data_levels, to_levels, to_unit
    from ..plotting import atomic_write, save_image_grid, save_scatter_grid

    out = Path(out)
    rng = tuple(cfg.data.data_range)
    if out.suffix == ".npz":
        arrays = {"samples": x.cpu().numpy()}
        if cfg.data.dataset != "toy":
            arrays["levels"] = to_levels(x, data_levels(cfg.data.dataset), rng).cpu().numpy().astype(np.uint8)
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy()
        atomic_write(out, lambda handle: np.savez(handle, **arrays))
    elif cfg.data.dataset == "toy":
        save_scatter_grid([(title, x)], out, cols=1)
    else:
        shown = 64 if nrow is None else nrow * nrow
        save_image_grid(to_unit(x[:shown], rng), out, nrow=nrow)
    return out


def _evaluate(args) -> int:
    from ..build import check_sampler_options, is_adaptive, parse_sampler_options
    from ..evaluate import evaluate, summary, write_report
    from ..plotting import check_output_file

    ckpt, cfg, device = _inference_setup(args, (".json",), data=True)
    if args.samples_out is not None:
        check_output_file(args.samples_out, (".png", ".npz"), "--samples-out")
    sampler = args.sampler or cfg.sampling.sampler
    options = dict(cfg.sampling.options) if args.sampler is None else {}
    options = check_sampler_options(sampler, options | parse_sampler_options(sampler, args.option))
    grid, rho = _grid_choice(args, ckpt.path, cfg, sampler, options)
    if is_adaptive(sampler, options) and args.steps is not None:
        raise ValueError("--steps does not apply to the adaptive samplers (adaptive_sde, ode's rk45: they pick their "
                         "own steps); "
                         "set --option rtol=/atol=, or --option method=euler|heun|rk4 for fixed steps")  # fmt: skip
    inception = args.inception or cfg.eval.inception or None
    if inception is not None and not Path(inception).is_file():
        raise FileNotFoundError(f"Inception-v3 weights {inception} not found (the file "
                                "pt_inception-2015-12-05-6726825d.pth; scoresde never downloads it)")  # fmt: skip
    report, x = evaluate(ckpt, sampler=sampler, steps=args.steps, options=options, n=args.n,
                         batch_size=args.batch_size, seed=args.seed, device=str(device), use_ema=not args.no_ema,
                         likelihood=args.likelihood, inception=inception, grid=grid, rho=rho,
                         progress=_show_progress(args.progress))  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(summary(report))
    if args.samples_out:
        title = f"{sampler} ({report['nfe']} NFE)"
        print(f"samples -> {_save_samples(x, args.samples_out, cfg, title)}")
    if args.out:
        print(f"report -> {write_report(report, args.out)}")
    return 0


def _train_classifier(args) -> int:
    from ..classifier import accuracy_table, train_classifier
    from ..config import load_config

    cfg = load_config(args.config, args.set)
    start = time.perf_counter()
    final, report = train_classifier(cfg, args.workdir, resume=not args.no_resume, progress=args.progress,
                                     overwrite=args.overwrite)  # fmt: skip
    print(f"trained the classifier {cfg.classifier.n_iters} steps in {time.perf_counter() - start:.0f} s; "
          f"checkpoint {final}")  # fmt: skip
    print(accuracy_table(report))
    print(f"accuracy -> {Path(args.workdir) / 'accuracy.json'}")
    return 0


def _demo(args) -> int:
    from ..demo import run_demo

    if args.n < 100:
        raise ValueError("-n must be at least 100")
    run_demo(args.out, n=args.n, seed=args.seed, progress=args.progress, quick=args.quick)
    return 0
