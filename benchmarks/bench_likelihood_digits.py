"""The likelihood solvers on the trained main-job model: test bits/dim against a tight reference, wall time, and
the spread of the Hutchinson estimate.

Part 1: the first ``--n`` test digits, one dequantization draw and one Rademacher probe per image shared by every
method that uses one probe per solve (the same ``SampleNoise`` streams): RK45 at ``--ref-tol`` (the reference),
RK45 at 1e-5 (the default before ``method="adams"``), and the fixed-grid ``adams`` solver at several step counts
with the same fixed probe (so that the differences are the solver's); then ``adams`` as ``evaluate`` runs it
(fresh probes at every evaluation), and the Gaussian-decoder bound. Per-image differences to the reference in
bits/dim: mean, standard deviation and largest absolute.

Part 2: the per-image standard deviation of the bits/dim over ``--seeds`` probe draws (the dequantization fixed),
for one Rademacher probe per solve with RK45 (before) and the fixed-grid solver with fresh probes per evaluation
(1 and 4 probes), at their NFE; ratios to the first.

    python benchmarks/bench_likelihood_digits.py --checkpoint outputs/digits/checkpoints [--grid likelihood-39]

(``--grid``: a grid made by ``scoresde optimize-grid outputs/digits/checkpoints --likelihood``, tuned on training
digits, scored here on the test digits.)
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import scoresde as sd
from scoresde.build import load_dataset
from scoresde.likelihood import bpd_from_logp, dequantize
from scoresde.noise import LIKELIHOOD_DRAWS, SampleNoise
from scoresde.sampling.optimize import load_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/digits/checkpoints")
    parser.add_argument("--n", type=int, default=180)
    parser.add_argument("--ref-tol", type=float, default=1e-7)
    parser.add_argument("--var-n", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--grid", default=None, help="also a grid saved by optimize-grid --likelihood (name or path)")
    args = parser.parse_args()
    model = sd.load(args.checkpoint)
    cfg = model.config
    data = load_dataset(cfg, "test")
    images = data.images[: args.n]
    rng = tuple(cfg.data.data_range)

    model64 = copy.deepcopy(model).double()

    def bpd(net=model, levels=images, **kw):
        noise = SampleNoise(0, range(args.n), draws=LIKELIHOOD_DRAWS)
        start = time.perf_counter()
        value, _, nfe = sd.bits_per_dim(net, levels, levels=data.levels, data_range=rng, generator=noise,
                                        batch_size=args.n, **kw)  # fmt: skip
        return value.double(), nfe, time.perf_counter() - start

    print(f"## Test bits/dim of the main-job model ({args.n} test digits, one dequantization draw each)\n")
    print("The reference runs in float64 (RK45 cannot resolve its tolerance in float32); every other row in float32,")
    print("as evaluate runs, so their differences include float32 rounding.\n")
    ref, ref_nfe, ref_s = bpd(model64, images.double(), rtol=args.ref_tol, atol=args.ref_tol)
    runs = [(f"RK45 {args.ref_tol:g}, float64 (reference)", ref, ref_nfe, ref_s)]
    base = bpd(rtol=1e-5, atol=1e-5)
    runs.append(("RK45 1e-5 (the default before)", *base))
    for steps in (19, 29, 39, 49):
        runs.append((f"adams {steps} steps, probe fixed per solve", *bpd(method="adams", steps=steps,
                                                                         fresh_probes=False)))  # fmt: skip
    if args.grid is not None:
        grid, _ = load_grid(args.grid, args.checkpoint)
        runs.append((f"adams on the tuned grid {args.grid} ({len(grid) - 1} steps), probe fixed per solve",
                     *bpd(method="adams", grid=grid, fresh_probes=False)))  # fmt: skip
    runs.append(("adams 39 steps, fresh probes (evaluate's default)", *bpd(method="adams")))
    runs.append(("adams 39 steps, fresh probes, decoder bound", *bpd(method="adams", truncation="decoder")))
    print("| method | NFE per image | wall (s) | time ratio to RK45 1e-5 | mean bits/dim | diff to reference: "
          "mean | std | max abs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for label, value, nfe, seconds in runs:
        d = value - ref
        print(f"| {label} | {nfe} | {seconds:.1f} | {seconds / base[2]:.3f} | {float(value.mean()):.4f} | "
              f"{float(d.mean()):+.5f} | {float(d.std()):.5f} | {float(d.abs().max()):.5f} |", flush=True)  # fmt: skip

    print(
        f"\n## Spread of the Hutchinson estimate ({args.var_n} test digits, {args.seeds} probe seeds, "
        "dequantization fixed)\n"
    )
    levels = images[: args.var_n].to(torch.float64)
    u = dequantize(levels, data.levels, torch.Generator().manual_seed(0))
    y = (rng[0] + (rng[1] - rng[0]) * u).float()
    dims = y[0].numel()
    print("| estimator | NFE | per-image std of bits/dim | ratio to one probe per RK45 solve | wall per pass (s) |")
    print("|---|---|---|---|---|")
    first = None
    estimators = [("RK45 1e-5, one Rademacher probe per solve", {}),
                  ("adams 39 steps, one fresh probe per evaluation", {"method": "adams"}),
                  ("adams 39 steps, 4 fresh probes per evaluation", {"method": "adams", "n_probes": 4})]  # fmt: skip
    for label, kw in estimators:
        values, start = [], time.perf_counter()
        for seed in range(args.seeds):
            logp, _, nfe = sd.log_likelihood(model, y, generator=torch.Generator().manual_seed(100 + seed), **kw)
            values.append(bpd_from_logp(logp.double(), dims, data.levels, rng))
        seconds = (time.perf_counter() - start) / args.seeds
        std = float(torch.stack(values).std(0).mean())
        first = first or std
        print(f"| {label} | {nfe} | {std:.4f} | {std / first:.2f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
