"""The commands that train: ``train`` (a score model), ``train-classifier`` (a noise-conditional classifier),
``ema`` (a post-hoc EMA of any length from a run's snapshots) and ``demo`` (the 2-D sampler demo with exact
scores)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .args import FORMATTER, run_arguments


def add_parsers(sub) -> None:
    """Add ``train``, ``train-classifier`` and ``demo`` to the subparsers."""
    fmt = FORMATTER
    train = sub.add_parser("train", help="train a score model from a config file", formatter_class=fmt,
                           description="Train a score model. Resumes from the newest checkpoint in WORKDIR.",
                           epilog="example:\n  scoresde train digits_vp --workdir outputs/digits "
                                  "--set training.n_iters=500")  # fmt: skip
    run_arguments(
        train,
        "a TOML config file or a preset's name (scoresde configs lists them)",
        "folder for checkpoints, logs and samples",
        "checkpoints, log.jsonl, loss.png and samples/",
    )

    clf = sub.add_parser("train-classifier", help="train a noise-conditional classifier for classifier guidance",
                         formatter_class=fmt,
                         description="Train the noise-conditional classifier p_t(y | x) of a config's [classifier] "
                                     "section on the data of its [data] section perturbed by its [sde] (use the "
                                     "score model's SDE). Resumes from the newest checkpoint in WORKDIR; ends with "
                                     "the test accuracy at a few times, also written to WORKDIR/accuracy.json.",
                         epilog="example:\n  scoresde train-classifier configs/digits_classifier.toml --workdir "
                                "outputs/digits_classifier\n  scoresde sample outputs/digits/checkpoints --class 3 "
                                "--classifier outputs/digits_classifier/checkpoints --out three.png")  # fmt: skip
    run_arguments(clf, "a TOML config file with [sde], [data] and [classifier], or a preset (digits_classifier)",
                  "folder for checkpoints, log.jsonl and accuracy.json",
                  "classifier checkpoints, log.jsonl and accuracy.json")  # fmt: skip

    ema = sub.add_parser("ema", help="rebuild the EMA of any length from a run's post-hoc snapshots",
                         formatter_class=fmt,
                         description="Post-hoc EMA (Karras et al. 2024): rebuild the weight average of relative "
                                     "length --length (its std over the training time averaged, 0.05 = the last "
                                     "5 percent's scale) from the power-function profiles a run kept with "
                                     "training.ema_type = 'posthoc', and write it as a checkpoint OUT/"
                                     "checkpoint_<step>.safetensors that sample, evaluate and likelihood read.",
                         epilog="example:\n  scoresde train digits_vp --workdir runs/d --set training.ema_type=posthoc"
                                "\n  scoresde ema runs/d --length 0.05 --out runs/d/ema_0.05\n  scoresde evaluate "
                                "runs/d/ema_0.05 -n 1000")  # fmt: skip
    ema.add_argument("source", help="a training workdir, its checkpoints/ folder or its posthoc/ folder")
    ema.add_argument("--length", type=float, required=True,
                     help="relative EMA length sigma_rel in (0, 0.28] (EDM2's best are about 0.05-0.15)")  # fmt: skip
    ema.add_argument("--step", type=int, default=None, help="the snapshot step to rebuild at (default: the last)")
    ema.add_argument("--out", required=True, help="folder for the checkpoint (an existing file is never replaced)")

    demo = sub.add_parser("demo", help="sample a 2-D Gaussian mixture with every sampler using its exact score",
                          formatter_class=fmt, epilog="example:\n  scoresde demo --out outputs/demo -n 5000",
                          description="Sample a known 2-D Gaussian mixture with every sampler (VP, sub-VP, VE) "
                                      "using its exact score; write a PNG and print the errors.")  # fmt: skip
    demo.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    demo.add_argument("-n", type=int, default=5000, help="samples per sampler (default 5000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--progress", action="store_true")
    demo.add_argument("--quick", action="store_true", help="a smoke run with 10x fewer steps")


def train_command(args) -> int:
    from ..config import load_config
    from ..train import train

    cfg = load_config(args.config, args.set)
    resumed_at = 0 if args.no_resume or args.overwrite else _newest_step(Path(args.workdir) / "checkpoints")
    start = time.perf_counter()
    final = train(cfg, args.workdir, resume=not args.no_resume, progress=args.progress, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        done = max(cfg.training.n_iters - resumed_at, 0)
        what = f"trained {done} steps" + (f" (resumed at step {resumed_at}, now {cfg.training.n_iters})"
                                          if resumed_at else "")  # fmt: skip
        print(f"{what} in {time.perf_counter() - start:.0f} s; checkpoint {final}")
    return 0


def _newest_step(directory: Path) -> int:
    """The step of the newest checkpoint in ``directory`` from its file name (0 if none)."""
    from ..checkpoint import PATTERN, latest_checkpoint

    newest = latest_checkpoint(directory)
    return 0 if newest is None else int(PATTERN.fullmatch(newest.name).group(1))


def train_classifier_command(args) -> int:
    from ..classifier import accuracy_table, train_classifier
    from ..config import load_config

    cfg = load_config(args.config, args.set)
    resumed_at = 0 if args.no_resume or args.overwrite else _newest_step(Path(args.workdir) / "checkpoints")
    start = time.perf_counter()
    final, report = train_classifier(cfg, args.workdir, resume=not args.no_resume, progress=args.progress,
                                     overwrite=args.overwrite)  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    done = max(cfg.classifier.n_iters - resumed_at, 0)
    print(f"trained the classifier {done} steps in {time.perf_counter() - start:.0f} s; checkpoint {final}")
    print(accuracy_table(report))
    print(f"accuracy -> {Path(args.workdir) / 'accuracy.json'}")
    return 0


def ema_command(args) -> int:
    from ..training.ema import save_posthoc_checkpoint, sigma_rel_to_gamma

    gamma = sigma_rel_to_gamma(args.length)  # checks the length before any file is read
    path = save_posthoc_checkpoint(args.source, args.length, args.out, args.step)
    print(f"post-hoc EMA of length {args.length:g} (power-function exponent {gamma:.2f}) -> {path}")
    return 0


def demo_command(args) -> int:
    from ..demo import run_demo

    if args.n < 100:
        raise ValueError("-n must be at least 100")
    run_demo(args.out, n=args.n, seed=args.seed, progress=args.progress, quick=args.quick)
    return 0


COMMANDS = {
    "train": train_command,
    "train-classifier": train_classifier_command,
    "ema": ema_command,
    "demo": demo_command,
}
