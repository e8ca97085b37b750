"""The ``likelihood`` command: bits/dim (images) or NLL (2-D data) of a split through the probability-flow ODE."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .args import (
    DEVICE_HELP,
    FORMATTER,
    data_root_argument,
    non_negative_int,
    positive_float,
    positive_int,
    progress_flag,
    seed,
    show_progress,
)
from .common import LogProgress, inference_setup


def add_parsers(sub) -> None:
    """Add ``likelihood`` to the subparsers."""
    fmt = FORMATTER
    lik = sub.add_parser("likelihood", help="bits/dim (images) or NLL (2-D) of a data split", formatter_class=fmt,
                         description="Exact likelihood through the probability-flow ODE, with uniform "
                                     "dequantization for images, averaged over --repeats passes.",
                         epilog="example:\n  scoresde likelihood outputs/digits/checkpoints --split test "
                                "--repeats 5")  # fmt: skip
    lik.add_argument("checkpoint")
    lik.add_argument("--split", default=None, choices=["train", "test"], help="default: the config's eval.split")
    lik.add_argument("--repeats", type=positive_int, default=None, help="default: the config's eval.repeats")
    lik.add_argument("--batch-size", type=positive_int, default=None, help="default: the config's eval.batch_size")
    lik.add_argument(
        "--method",
        default=None,
        choices=["adams", "rk45", "euler", "heun", "rk4"],
        help="default: the config's eval.likelihood_method (adams: fixed grid, 40 NFE; rk45: adaptive)",
    )
    lik.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="steps of a fixed-grid method (default: the config's eval.likelihood_steps, 39)",
    )
    lik.add_argument(
        "--grid",
        default=None,
        help="a grid saved by optimize-grid --likelihood (its name in the run, or a path) for adams",
    )
    lik.add_argument("--probes", type=positive_int, default=None, help="Hutchinson probes (default: eval.probes, 1)")
    lik.add_argument(
        "--truncation",
        default=None,
        choices=["none", "decoder"],
        help="none: the model's density at eps (the paper's); decoder: the Gaussian-decoder bound",
    )
    lik.add_argument(
        "--rtol",
        type=positive_float,
        default=None,
        help="RK45's tolerance (implies --method rk45; default: the config's eval.rtol, 1e-5)",
    )
    lik.add_argument("--atol", type=positive_float, default=None, help="default: the config's eval.atol (1e-5)")
    lik.add_argument("--exact", action="store_true", help="exact divergence instead of Hutchinson")
    lik.add_argument("--first", type=non_negative_int, default=0, help="index of the first data point (default 0)")
    lik.add_argument("-n", type=positive_int, default=None, help="number of data points (default: the rest)")
    lik.add_argument("--seed", type=seed, default=0, help="point i's dequantization and probes are the same in any run")
    lik.add_argument("--device", default="auto", help=DEVICE_HELP)
    lik.add_argument("--out", default=None, help="also write the result as JSON here (.json)")
    data_root_argument(lik)
    progress_flag(lik, "over the batches")


def likelihood_command(args) -> int:
    from tqdm.auto import tqdm

    from ..build import load_dataset
    from ..distributed import finish, gather_cat, gather_sum, init_from_env, shard
    from ..evaluate import write_report
    from ..likelihood import bits_per_dim, describe_likelihood, likelihood_options, log_likelihood
    from ..noise import LIKELIHOOD_DRAWS, SampleNoise

    ckpt, cfg, device = inference_setup(args, (".json",), data=True)
    ev = cfg.eval
    split, repeats = args.split or ev.split, args.repeats or ev.repeats
    batch_size = args.batch_size or ev.batch_size
    progress = show_progress(args.progress)
    rank, world = init_from_env()
    tolerances = args.rtol is not None or args.atol is not None
    method = args.method or ("rk45" if tolerances else ev.likelihood_method)  # tolerances imply the adaptive solver
    if tolerances and method != "rk45":
        raise ValueError(f"--rtol and --atol set the adaptive solver's tolerances; --method {method} takes --steps")
    if args.steps is not None and method == "rk45":
        raise ValueError("--steps sets a fixed-grid method's steps; --method rk45 takes --rtol and --atol")
    kw = likelihood_options(method, args.steps or ev.likelihood_steps,
                            args.probes or ev.probes, args.truncation or ev.truncation, args.rtol or ev.rtol,
                            args.atol or ev.atol)  # fmt: skip
    kw["divergence"] = "exact" if args.exact else "hutchinson"
    if args.grid is not None:
        from ..build import build_sde
        from .grids import resolve_likelihood_grid

        kw["grid"] = resolve_likelihood_grid(args.grid, ckpt.path, build_sde(cfg), method, args.steps is not None)
        del kw["steps"]
    how = describe_likelihood(kw, kw["divergence"])
    data = _selection(load_dataset(cfg, split), args.first, args.n, split)
    if rank == 0:
        print(f"likelihood of {len(data)} {split} point(s) from index {args.first}: {repeats} repeat(s), batches of "
              f"{batch_size}, {how}, {world} process(es) on {device}", flush=True)  # fmt: skip
    model = ckpt.load(device=device)
    sde, score = model.sde, model
    part = shard(len(data), rank, world)
    # one stream per data point (its index in the split): the result does not depend on the batch size, the number of
    # processes or the selection
    noise = SampleNoise(args.seed, range(args.first + part.start, args.first + part.stop), draws=LIKELIHOOD_DRAWS)
    start = time.perf_counter()
    per_repeat, total_nfe = [], 0
    n_batches = -(-(part.stop - part.start) // batch_size)
    bar = tqdm(total=repeats * n_batches, desc="likelihood", unit="batch", dynamic_ncols=True,
               disable=not (progress and rank == 0))  # fmt: skip
    log = LogProgress("likelihood", repeats * n_batches, "batches", enabled=not progress and rank == 0)
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
            log.step(f"{total_nfe} NFE")
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
    result = {"split": split, "first": args.first, "n": len(data), "repeats": per_repeat, "mean": mean, "stderr": sem,
              "unit": unit, "nfe": total_nfe, "seconds": time.perf_counter() - start, "method": how}  # fmt: skip
    if cfg.data.dataset != "toy":
        result["uniform_bound_bits_per_dim"] = math.log2(data.levels)
    print(f"{split} {unit}: {mean:.4f}" + (f" +- {sem:.4f}" if len(per_repeat) > 1 else "")
          + f"  ({repeats} repeat(s), {total_nfe} NFE, {result['seconds']:.0f} s; {how})")  # fmt: skip
    if "uniform_bound_bits_per_dim" in result:
        print(f"(a uniform model over the {data.levels} levels scores {result['uniform_bound_bits_per_dim']:.3f})")
    if args.out:
        write_report(result, args.out)
    return 0


def _selection(data, first: int, n: int | None, split: str):
    """Data points ``[first, first + n)`` of the split (all from ``first`` without ``n``); a range past its end is an
    error naming the split's size."""
    from ..data import ImageData

    size = len(data)
    stop = size if n is None else first + n
    if first >= size or stop > size:
        raise ValueError(f"the {split} split has {size} data points; --first {first}"
                         + ("" if n is None else f" -n {n}") + " asks for more")  # fmt: skip
    if isinstance(data, ImageData):
        labels = None if data.labels is None else data.labels[first:stop]
        return ImageData(data.images[first:stop], data.levels, labels)
    return data[first:stop]


COMMANDS = {"likelihood": likelihood_command}
