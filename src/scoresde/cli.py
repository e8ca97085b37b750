"""Command-line interface: ``scoresde train | sample | likelihood | demo``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

EPILOG = """examples:
  scoresde train configs/digits_vp.toml --workdir outputs/digits
  scoresde train configs/toy_mixture.toml --workdir runs/toy --set training.lr=1e-3 --set training.n_iters=2000
  scoresde sample outputs/digits/checkpoints --sampler pc --steps 1000 -n 64 --out grid.png
  scoresde likelihood outputs/digits/checkpoints --split test --repeats 5
  scoresde demo --out outputs/demo
"""


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="scoresde", description="Score-based generative modeling through SDEs.",
                                     epilog=EPILOG, formatter_class=fmt)  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a score model from a config file", formatter_class=fmt,
                           description="Train a score model. Resumes from the newest checkpoint in WORKDIR.",
                           epilog="example:\n  scoresde train configs/digits_vp.toml --workdir outputs/digits "
                                  "--set training.n_iters=500")  # fmt: skip
    train.add_argument("config", help="TOML config file (see configs/)")
    train.add_argument("--workdir", required=True, help="folder for checkpoints, logs and samples")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    train.add_argument("--no-resume", action="store_true", help="start over even if WORKDIR has checkpoints")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    sample = sub.add_parser("sample", help="draw samples from a checkpoint", formatter_class=fmt,
                            description="Draw samples from a checkpoint (a file or a checkpoints folder: the newest). "
                                        "The output type follows --out: .png (image grid or 2-D scatter) or .npz.",
                            epilog="example:\n  scoresde sample outputs/digits/checkpoints --sampler ode -n 64 "
                                   "--out ode.png\n  scoresde sample ckpt.safetensors --sampler pc --option snr=0.1 "
                                   "--out pc.npz")  # fmt: skip
    sample.add_argument("checkpoint")
    sample.add_argument("--sampler", default=None, help="sampler name (default: the config's)")
    sample.add_argument("--steps", type=int, default=None, help="steps (default: the config's; not for rk45)")
    sample.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    sample.add_argument("--out", default="samples.png", help="output file, .png or .npz")
    sample.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--progress", action="store_true")

    lik = sub.add_parser("likelihood", help="bits/dim (images) or NLL (2-D) of a data split", formatter_class=fmt,
                         description="Exact likelihood through the probability-flow ODE, with uniform "
                                     "dequantization for images, averaged over --repeats passes.",
                         epilog="example:\n  scoresde likelihood outputs/digits/checkpoints --split test "
                                "--repeats 5")  # fmt: skip
    lik.add_argument("checkpoint")
    lik.add_argument("--split", default="test", choices=["train", "test"])
    lik.add_argument("--repeats", type=int, default=1)
    lik.add_argument("--batch-size", type=int, default=512)
    lik.add_argument("--rtol", type=float, default=1e-5)
    lik.add_argument("--atol", type=float, default=1e-5)
    lik.add_argument("--exact", action="store_true", help="exact divergence instead of Hutchinson")
    lik.add_argument("--seed", type=int, default=0)
    lik.add_argument("--device", default="cpu")
    lik.add_argument("--out", default=None, help="also write the result as JSON here")

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
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    try:
        return {"train": _train, "sample": _sample, "likelihood": _likelihood, "demo": _demo}[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as err:
        print(f"scoresde {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scoresde {args.command}: interrupted (checkpoints written so far are intact)", file=sys.stderr)
        return 130


def _train(args) -> int:
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.set)
    start = time.perf_counter()
    final = train(cfg, args.workdir, resume=not args.no_resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {cfg.training.n_iters} steps in {time.perf_counter() - start:.0f} s; checkpoint {final}")
    return 0


def _parse_options(items: list[str]) -> dict:
    from .config import parse_override

    options = {}
    for item in items:
        _, key, value = parse_override(f"sampling.{item}")
        options[key] = value
    return options


def _sample(args) -> int:
    from .data import data_levels, to_levels, to_unit
    from .distributed import finish, gather_cat, init_from_env, shard
    from .plotting import save_image_grid, save_scatter_grid
    from .sampling import sample
    from .train import build_score, data_shape, load_for_inference

    if args.n < 1:
        raise ValueError("-n must be positive")
    rank, world = init_from_env()
    part = shard(args.n, rank, world)
    cfg, sde, model = load_for_inference(args.checkpoint, use_ema=not args.no_ema, device=args.device)
    score = build_score(model, sde, cfg)
    options = dict(cfg.sampling.options) if args.sampler is None else {}
    options |= _parse_options(args.option)
    sampler = args.sampler or cfg.sampling.sampler
    adaptive = sampler == "ode" and options.get("method", "rk45") == "rk45"
    steps = None if adaptive else (args.steps or cfg.sampling.steps)
    eps = cfg.sampling.eps or None
    start = time.perf_counter()
    n_local = part.stop - part.start
    x, nfe = torch.zeros(0, *data_shape(cfg)), 0
    if n_local:
        x, nfe = sample(sde, score, (n_local, *data_shape(cfg)), sampler=sampler, steps=steps, eps=eps,
                        generator=torch.Generator().manual_seed(args.seed + 1000 * rank), device=args.device,
                        return_nfe=True, progress=args.progress and rank == 0, **options)  # fmt: skip
    x = gather_cat(x, world)
    finish(world)
    if rank != 0:
        return 0
    seconds = time.perf_counter() - start
    out = Path(args.out)
    rng = tuple(cfg.data.data_range)
    if out.suffix == ".npz":
        arrays = {"samples": x.cpu().numpy()}
        if cfg.data.dataset != "toy":
            arrays["levels"] = to_levels(x, data_levels(cfg.data.dataset), rng).cpu().numpy().astype(np.uint8)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **arrays)
    elif out.suffix == ".png":
        if cfg.data.dataset == "toy":
            save_scatter_grid([(f"{sampler} ({nfe} NFE)", x)], out, cols=1)
        else:
            save_image_grid(to_unit(x, rng), out)
    else:
        raise ValueError(f"--out must end in .png or .npz, got {out.name}")
    print(f"{args.n} samples with {sampler} ({nfe} NFE, {seconds:.1f} s) -> {out}")
    return 0


def _likelihood(args) -> int:
    from .distributed import finish, gather_cat, gather_sum, init_from_env, shard
    from .likelihood import bits_per_dim, log_likelihood
    from .train import build_score, load_dataset, load_for_inference

    if args.repeats < 1 or args.batch_size < 1:
        raise ValueError("--repeats and --batch-size must be positive")
    rank, world = init_from_env()
    cfg, sde, model = load_for_inference(args.checkpoint, device=args.device)
    score = build_score(model, sde, cfg)
    data = load_dataset(cfg, args.split)
    part = shard(len(data), rank, world)
    gen = torch.Generator().manual_seed(args.seed + 1000 * rank)
    kw = {"rtol": args.rtol, "atol": args.atol, "divergence": "exact" if args.exact else "hutchinson"}
    start = time.perf_counter()
    per_repeat, total_nfe = [], 0
    for _ in range(args.repeats):
        values = [torch.zeros(0)]
        for lo in range(part.start, part.stop, args.batch_size):
            hi = min(lo + args.batch_size, part.stop)
            if cfg.data.dataset == "toy":
                batch = data[lo:hi].to(args.device)
                logp, _, nfe = log_likelihood(sde, score, batch, generator=gen, **kw)
                values.append(-logp.cpu().float())
            else:
                batch = data.images[lo:hi].to(args.device)
                bpd, _, nfe = bits_per_dim(sde, score, batch, levels=data.levels, data_range=tuple(cfg.data.data_range),
                                           dequantize_data=True, generator=gen, **kw)  # fmt: skip
                values.append(bpd.cpu().float())
            total_nfe += nfe
        per_repeat.append(float(gather_cat(torch.cat(values), world).double().mean()))
    total_nfe = int(gather_sum(total_nfe, world))
    finish(world)
    if rank != 0:
        return 0
    unit = "nats/sample (negative log-likelihood)" if cfg.data.dataset == "toy" else "bits/dim"
    mean = float(np.mean(per_repeat))
    sem = float(np.std(per_repeat, ddof=1) / np.sqrt(len(per_repeat))) if len(per_repeat) > 1 else float("nan")
    result = {"split": args.split, "repeats": per_repeat, "mean": mean, "stderr": sem, "unit": unit,
              "nfe": total_nfe, "seconds": time.perf_counter() - start}  # fmt: skip
    if cfg.data.dataset != "toy":
        import math

        result["uniform_bound_bits_per_dim"] = math.log2(data.levels)
    print(f"{args.split} {unit}: {mean:.4f}" + (f" +- {sem:.4f}" if len(per_repeat) > 1 else "")
          + f"  ({args.repeats} repeat(s), {total_nfe} NFE, {result['seconds']:.0f} s)")  # fmt: skip
    if "uniform_bound_bits_per_dim" in result:
        print(f"(a uniform model over the {data.levels} levels scores {result['uniform_bound_bits_per_dim']:.3f})")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    if args.n < 100:
        raise ValueError("-n must be at least 100")
    run_demo(args.out, n=args.n, seed=args.seed, progress=args.progress, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
