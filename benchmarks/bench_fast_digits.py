"""The fast solvers on the main-job digits model: FD at 10 and 20 NFE against the 1,000-step samplers.

The baselines are measured in the same run: the paper's predictor-corrector sampler (reverse
diffusion + Langevin, snr 0.16, 1,000 steps = 2,001 NFE; the best 1,000-step sampler of
``quality_digits.md``) and the converged probability-flow ODE (RK45, 1e-5). Every row draws
1,000 samples (one noise stream per sample) and scores them in the feature space of the
shipped digits classifier against the 297 test digits (FD; the floor is 1,000 training
digits against the same test digits). The fast solvers run for seeds 0, 1, 2 (their mean
and range; FD of 1,000 samples moves by about +-1 between seeds), the baselines for seed 0.

Also: grids optimised for the model (``optimize_grid``, 256 starting points), the adaptive
SDE solver against PC's NFE, and an FD-against-NFE curve (``docs/fast_digits.png``).

    python benchmarks/bench_fast_digits.py [CHECKPOINT] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde import metrics
from scoresde.build import build_score, data_shape, load_dataset
from scoresde.data import data_levels, to_levels
from scoresde.features import digits_features, load_digits_classifier
from scoresde.model import load_for_inference
from scoresde.plotting import save_line_plot
from scoresde.sampling import optimize_grid

ROOT = Path(__file__).parents[1]
FAST = {  # label: (sampler, options)
    "DDIM (DPM-Solver++ 1)": ("dpm_solver++", {"order": 1}),
    "DPM-Solver++ 2M": ("dpm_solver++", {"order": 2}),
    "DPM-Solver++ 3M": ("dpm_solver++", {"order": 3}),
    "DPM-Solver++ 3S": ("dpm_solver++", {"order": 3, "multistep": False}),
    "DPM-Solver 3M": ("dpm_solver", {"order": 3}),
    "UniPC 2": ("unipc", {"order": 2}),
    "UniPC 3": ("unipc", {"order": 3}),
    "EDM Heun": ("edm_heun", {}),
    "SDE-DPM-Solver++ 2M": ("sde_dpm_solver++", {}),
}
OPTIMISED = ("UniPC 2", "DPM-Solver++ 3M")
CURVES = ("DDIM (DPM-Solver++ 1)", "DPM-Solver++ 2M", "UniPC 2", "EDM Heun", "SDE-DPM-Solver++ 2M")
CURVE_NFE = (5, 8, 10, 15, 20, 30, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(ROOT / "outputs" / "digits" / "checkpoints"))
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="no PC-1000 baseline, one seed, no curves")
    parser.add_argument(
        "--pc-fd",
        type=float,
        default=None,
        help="take PC-1000's FD from an earlier run of bench_quality_digits (same checkpoint, "
        "seed and protocol) instead of measuring it again (15 minutes); labelled as such",
    )
    parser.add_argument("--optimise", default="10,20", help="budgets with optimised grids (comma-separated)")
    parser.add_argument("--no-curves", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fast_digits.md"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "fast_digits.png"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg, sde, model = load_for_inference(args.checkpoint)
    score = build_score(model, sde, cfg)
    shape = data_shape(cfg)
    levels = data_levels(cfg.data.dataset)
    net = load_digits_classifier()

    def features(x: torch.Tensor) -> torch.Tensor:
        unit = (to_levels(x, levels, tuple(cfg.data.data_range)).double() + 0.5) / levels
        return digits_features(unit.float(), net)[0]

    def unit_levels(images: torch.Tensor) -> torch.Tensor:
        return digits_features(((images.double() + 0.5) / levels).float(), net)[0]

    f_ref = unit_levels(load_dataset(cfg, cfg.eval.split).images)
    floor = metrics.frechet_distance(unit_levels(load_dataset(cfg, "train").images[: args.n]), f_ref)

    def fd(sampler: str, seed: int = 0, **kw) -> tuple[float, int, float]:
        start = time.perf_counter()
        x, nfe = sd.sample(sde, score, (args.n, *shape), sampler=sampler, generator=sd.SampleNoise(seed, args.n),
                           batch_size=500, return_nfe=True, **kw)  # fmt: skip
        seconds = time.perf_counter() - start
        return metrics.frechet_distance(features(x), f_ref), nfe, seconds

    seeds = (0,) if args.quick else (0, 1, 2)
    lines = [f"# Fast solvers on the digits model ({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/bench_fast_digits.py`: {args.checkpoint} (EMA weights), {args.n} samples per row "
             f"(batches of 500), FD in the shipped digits classifier's features against the {f_ref.shape[0]} test "
             f"digits; torch {torch.__version__}, 2 threads, CPU. **Floor** ({args.n} training digits): "
             f"**{floor:.2f}**.", ""]  # fmt: skip
    baselines = {}
    if args.pc_fd is not None:
        baselines["PC 1000 (reverse diffusion + Langevin, snr 0.16), from quality_digits.md"] = (args.pc_fd, 2001, 0.0)
    if not args.quick and args.pc_fd is None:
        baselines["PC 1000 (reverse diffusion + Langevin, snr 0.16)"] = fd("pc", steps=1000, snr=0.16)
        print("pc", baselines["PC 1000 (reverse diffusion + Langevin, snr 0.16)"], flush=True)
        baselines["PF-ODE RK45 (1e-5)"] = fd("ode")
        print("rk45", baselines["PF-ODE RK45 (1e-5)"], flush=True)
    best = min((v[0] for k, v in baselines.items() if k.startswith("PC")), default=float("nan"))
    lines += ["## Baselines (seed 0)", "", "| sampler | NFE | FD | FD / floor | time (s) |", "|---|---|---|---|---|"]
    for label, (value, nfe, seconds) in baselines.items():
        shown = f"{seconds:.0f}" if seconds else "- (earlier run)"
        lines.append(f"| {label} | {nfe} | {value:.2f} | {value / floor:.2f} | {shown} |")
    lines += ["", f"Goals: FD at 10 NFE within 15 % of PC-1000's ({1.15 * best:.2f}), at 20 NFE within 5 % "
              f"({1.05 * best:.2f}).", ""]  # fmt: skip

    grids = {}
    optimised_nfe = tuple(int(v) for v in args.optimise.split(",") if v)
    for label in OPTIMISED:
        sampler, options = FAST[label]
        for nfe in optimised_nfe:
            start = time.perf_counter()
            grids[(label, nfe)] = optimize_grid(
                sde,
                score,
                nfe,
                shape=shape,
                sampler=sampler,
                n=256,
                generator=torch.Generator().manual_seed(1),
                batch_size=256,
                **options,
            )
            grids[(label, nfe, "seconds")] = time.perf_counter() - start  # fmt: skip
            print(f"optimised {label} {nfe}", flush=True)

    lines += ["## FD at 10 and 20 NFE", "",
              f"Mean over seeds {', '.join(map(str, seeds))} (range in brackets); ratio: the mean over PC-1000's FD "
              "(same run). Grids: each solver's default (log_snr; karras for EDM Heun) unless stated; "
              "'optimised': `optimize_grid` for this model, solver and budget.", "",
              "| solver | grid | NFE | FD | FD / PC-1000 | time (s) |", "|---|---|---|---|---|---|"]  # fmt: skip
    rows = [(label, None) for label in FAST] + [(label, "optimised") for label in OPTIMISED]
    for label, grid_kind in rows:
        sampler, options = FAST[label]
        for nfe in optimised_nfe if grid_kind else (10, 20):
            kw = {"grid": grids[(label, nfe)]} if grid_kind else {"steps": nfe}
            runs = [fd(sampler, seed, **kw, **options) for seed in seeds]
            values = [r[0] for r in runs]
            mean = sum(values) / len(values)
            spread = f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
            grid_name = grid_kind or sd.sampling.default_grid(sampler)
            lines.append(f"| {label} | {grid_name} | {runs[0][1]} | {mean:.2f}{spread} | {mean / best:.2f} | "
                         f"{runs[0][2]:.1f} |")  # fmt: skip
            print(lines[-1], flush=True)
    lines += ["", "Optimising the grids took " + ", ".join(
        f"{grids[(label, nfe, 'seconds')]:.0f} s ({label}, {nfe} NFE)" for label in OPTIMISED for nfe in optimised_nfe
    ) + ".", ""]  # fmt: skip

    lines += ["## The adaptive SDE solver (seed 0)", "", "| options | NFE | FD | FD / PC-1000 | time (s) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for options in ({}, {"rtol": 0.02}):
        value, nfe, seconds = fd("adaptive_sde", **options)
        opts = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults (rtol 0.05, atol 0.0078)"
        lines.append(f"| {opts} | {nfe} | {value:.2f} | {value / best:.2f} | {seconds:.0f} |")
        print(lines[-1], flush=True)

    if not (args.quick or args.no_curves):
        series = {}
        lines += ["", "## FD against NFE (seed 0)", "", "| solver | " + " | ".join(map(str, CURVE_NFE)) + " |",
                  "|---|" + "---|" * len(CURVE_NFE)]  # fmt: skip
        for label in CURVES:
            sampler, options = FAST[label]
            points = [fd(sampler, steps=nfe, **options) for nfe in CURVE_NFE]
            series[label] = ([p[1] for p in points], [p[0] for p in points])
            lines.append(f"| {label} | " + " | ".join(f"{p[0]:.2f}" for p in points) + " |")
        series["PC 1000 (2001 NFE)"] = ([CURVE_NFE[0], CURVE_NFE[-1]], [best, best])
        series["floor"] = ([CURVE_NFE[0], CURVE_NFE[-1]], [floor, floor])
        save_line_plot(series, args.plot, title="digits model: FD against NFE", xlabel="NFE", ylabel="FD",
                       log_y=True)  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
