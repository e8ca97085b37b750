"""The fast solvers on the 2-D mixture with its exact score: errors against NFE, for every grid.

For VP, sub-VP and VE, each solver (DPM-Solver++ 2M / 3M / 3S, DPM-Solver 3M, UniPC 2 / 3,
EDM Heun, SDE-DPM-Solver++ 2M, and DDIM as the first-order baseline) runs at NFE budgets
5..50 on the grids uniform, quadratic, log_snr, karras and a grid optimised for that
solver, SDE and budget (``scoresde.sampling.optimize_grid``, 512 starting points, its own
seed; the errors are measured on other samples). Each cell is the core issue's three errors
on 16,000 samples against 200,000 true samples: mode-weight total variation (< 0.03), worst
within-mode std error (< 8 %), mean log-density gap (< 0.06 nats). It prints

1. the fewest NFE at which each solver and grid meets all three criteria,
2. the three errors against NFE of every solver on its best grid (also ``docs/solvers_nfe.png``),
3. the wall time of each solver at 10 NFE against DDIM's, measured in the same run.

    python benchmarks/bench_solvers.py [--n 16000] [--sde vp subvp ve] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import scoresde as sd
from scoresde.plotting import save_line_plot, save_png
from scoresde.sampling import optimize_grid
from scoresde.toy import demo_mixture, mixture_errors

ROOT = Path(__file__).parents[1]
SOLVERS = {  # label: (sampler, options)
    "DDIM": ("dpm_solver++", {"order": 1}),
    "DPM-Solver++ 2M": ("dpm_solver++", {"order": 2}),
    "DPM-Solver++ 3M": ("dpm_solver++", {"order": 3}),
    "DPM-Solver++ 3S": ("dpm_solver++", {"order": 3, "multistep": False}),
    "DPM-Solver 3M": ("dpm_solver", {"order": 3}),
    "UniPC 2": ("unipc", {"order": 2}),
    "UniPC 3": ("unipc", {"order": 3}),
    "EDM Heun": ("edm_heun", {}),
    "SDE-DPM-Solver++ 2M": ("sde_dpm_solver++", {}),
}
GRIDS = ("uniform", "quadratic", "log_snr", "karras", "optimised")
BUDGETS = (5, 6, 8, 10, 12, 15, 20, 30, 50)
CRITERIA = {"tv": 0.03, "std": 0.08, "logp": 0.06}
DETERMINISTIC = {"dpm_solver++", "dpm_solver", "unipc", "edm_heun"}


def meets(errors: dict[str, float]) -> bool:
    return all(abs(errors[k]) < limit for k, limit in CRITERIA.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16_000)
    parser.add_argument("--sde", nargs="+", default=["vp", "subvp", "ve"], choices=["vp", "subvp", "ve"])
    parser.add_argument("--quick", action="store_true", help="fewer budgets and solvers (a smoke run)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "solvers.md"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "solvers_nfe.png"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    budgets = (6, 10, 20) if args.quick else BUDGETS
    solvers = dict(list(SOLVERS.items())[:3]) if args.quick else SOLVERS
    mixture = demo_mixture()
    reference = mixture.sample(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    factories = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}
    lines = [f"# Fast solvers on the 2-D mixture (exact score), {time.strftime('%Y-%m-%d')}", "",
             f"`python benchmarks/bench_solvers.py`: {args.n} samples per cell (seed 0), 200,000 true samples as "
             f"the reference, torch {torch.__version__}, 2 threads, CPU. Criteria: TV < 0.03, std err < 0.08, "
             "|logp err| < 0.06. The optimised grids come from `optimize_grid` (512 other starting points, "
             "seed 5) for each solver, SDE and budget; SDE-DPM-Solver++ is stochastic, so it has no optimised "
             "grid of its own and uses UniPC 2's.", ""]  # fmt: skip
    results: dict[tuple[str, str, str, int], dict[str, float]] = {}
    grids_used: dict[tuple[str, str, int], list[float]] = {}
    optimise_seconds = []
    for name in args.sde:
        sde = factories[name]()
        score = mixture.score_fn(sde)
        for label, (sampler, options) in solvers.items():
            for nfe in budgets:
                for grid in GRIDS:
                    if grid == "optimised":
                        source, opts = (sampler, options) if sampler in DETERMINISTIC else ("unipc", {"order": 2})
                        key = (name, f"{source}{opts}", nfe)
                        if key not in grids_used:
                            start = time.perf_counter()
                            grids_used[key] = optimize_grid(sde, score, nfe, shape=(2,), sampler=source, n=512,
                                                            generator=torch.Generator().manual_seed(5),
                                                            dtype=torch.float64, **opts)  # fmt: skip
                            optimise_seconds.append(time.perf_counter() - start)
                        kw = {"grid": grids_used[key]}
                    else:
                        kw = {"grid": grid, "steps": nfe}
                    try:
                        x, used = sd.sample(sde, score, (args.n, 2), sampler=sampler, return_nfe=True,
                                            generator=torch.Generator().manual_seed(0), **kw, **options)  # fmt: skip
                        errors = mixture_errors(mixture, x, reference) | {"nfe": used}
                    except (ValueError, FloatingPointError) as err:
                        errors = {"tv": float("nan"), "std": float("nan"), "logp": float("nan"), "nfe": nfe,
                                  "error": str(err).splitlines()[0]}  # fmt: skip
                    results[(name, label, grid, nfe)] = errors
            print(f"{name} {label} done", flush=True)

    lines += ["## 1. Fewest NFE meeting all three criteria", "",
              "(`-`: not within the budgets tried, up to 50; EDM Heun spends 2k + 1 <= budget)", "",
              "| SDE | solver | " + " | ".join(GRIDS) + " |", "|---|---|" + "---|" * len(GRIDS)]  # fmt: skip
    for name in args.sde:
        for label in solvers:
            cells = []
            for grid in GRIDS:
                ok = [results[(name, label, grid, n)]["nfe"] for n in budgets if meets(results[(name, label, grid, n)])]
                cells.append(str(min(ok)) if ok else "-")
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Optimising a grid took {min(optimise_seconds):.1f}-{max(optimise_seconds):.1f} s "
              f"(median {sorted(optimise_seconds)[len(optimise_seconds) // 2]:.1f} s) on the mixture.", ""]  # fmt: skip

    lines += ["## 2. Errors against NFE on the best grid of each solver", "",
              "Best grid: the one meeting the criteria at the fewest NFE (ties and misses: the smallest sum of "
              "error/criterion ratios at 10 NFE). Cells: TV / std err / logp err.", ""]  # fmt: skip
    series: dict[str, dict[str, dict[str, tuple[list[float], list[float]]]]] = {}
    for name in args.sde:
        lines += [f"### {name}", "", "| solver | grid | " + " | ".join(map(str, budgets)) + " |",
                  "|---|---|" + "---|" * len(budgets)]  # fmt: skip
        for label in solvers:
            grid = min(GRIDS, key=lambda g, n=name, lb=label: _rank(results, n, lb, g, budgets))
            row = []
            for n in budgets:
                e = results[(name, label, grid, n)]
                mark = "**" if meets(e) else ""
                row.append(f"{mark}{e['tv']:.3f} / {e['std']:.3f} / {e['logp']:+.3f}{mark}")
                for metric in ("tv", "std", "logp"):
                    xs, ys = series.setdefault(name, {}).setdefault(metric, {}).setdefault(label, ([], []))
                    xs.append(e["nfe"])
                    ys.append(abs(e[metric]))
            lines.append(f"| {label} | {grid} | " + " | ".join(row) + " |")
        lines.append("")

    lines += ["## 3. Wall time at 10 NFE (16,000 samples, log_snr grid; karras for EDM Heun)", "",
              "| solver | time (ms) | time / DDIM |", "|---|---|---|"]  # fmt: skip
    sde = sd.VPSDE()
    score = mixture.score_fn(sde)
    times = {}
    for label, (sampler, options) in solvers.items():
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            sd.sample(sde, score, (args.n, 2), sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0),
                      **options)  # fmt: skip
            best = min(best, time.perf_counter() - start)
        times[label] = best
    for label, seconds in times.items():
        lines.append(f"| {label} | {1000 * seconds:.1f} | {seconds / times['DDIM']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    _plot(series, args.sde, Path(args.plot))
    print(f"-> {args.out}, {args.plot}")


def _rank(results, name: str, label: str, grid: str, budgets) -> tuple[float, float]:
    ok = [results[(name, label, grid, n)]["nfe"] for n in budgets if meets(results[(name, label, grid, n)])]
    at10 = results.get((name, label, grid, 10)) or results[(name, label, grid, budgets[len(budgets) // 2])]
    ratio = sum(abs(at10[k]) / v for k, v in CRITERIA.items())
    return (min(ok) if ok else 1e9, ratio if ratio == ratio else 1e9)


def _plot(series, sdes, path: Path) -> None:
    """One panel per SDE and error (log scale), tiled into one PNG."""
    titles = {"tv": "mode-weight TV", "std": "worst std error", "logp": "|logp error| (nats)"}
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sdes:
            row = []
            for metric in ("tv", "std", "logp"):
                file = Path(tmp) / f"{name}_{metric}.png"
                save_line_plot(series[name][metric], file, title=f"{name}: {titles[metric]}", xlabel="NFE",
                               size=(520, 360), log_y=True)  # fmt: skip
                row.append(Image.open(file).convert("RGB"))
            panels.append(row)
        width, height = panels[0][0].size
        canvas = Image.new("RGB", (3 * width, len(panels) * height), "white")
        for i, row in enumerate(panels):
            for j, image in enumerate(row):
                canvas.paste(image, (j * width, i * height))
        save_png(canvas, path)


if __name__ == "__main__":
    main()
