"""Which forward process trains the best digits model: VP + eps (today's main job), EDM, rectified flow, cosine VP
(and the two time samplings that matter most, shifted: EDM's log-normal centred higher, rectified flow on uniform t).

Train the models first (same network, data, optimiser and number of steps; `make bench-processes` does both):

    scoresde train configs/digits_vp.toml --workdir outputs/digits        # (make demo's model)
    scoresde train configs/digits_edm.toml --workdir outputs/digits_edm
    scoresde train configs/digits_rf.toml --workdir outputs/digits_rf
    scoresde train configs/digits_cosine.toml --workdir outputs/digits_cosine
    scoresde train configs/digits_rf.toml --workdir outputs/digits_rf_uniform --set training.time_sampling=uniform
    scoresde train configs/digits_edm.toml --workdir outputs/digits_edm_p0 --set training.time_mean=0.0
    python benchmarks/bench_processes.py

Per model (EMA weights), every number a mean over noise seeds 0, 1, 2 (range in brackets), 1,000 samples per
seed (one noise stream per sample), against the 297 test digits:

* FD / floor at 10 and 20 NFE with the best of DPM-Solver++ 2M/3M and UniPC 2/3 (log-SNR grid), and the best
  sampler at any budget among UniPC 3 and SDE-DPM-Solver++ 2M at 50 NFE and EDM Heun at 51 (karras grid); the
  adaptive PF-ODE is left out (465 NFE, 90 s a seed on the VP model, no better than UniPC 3 at 50 there:
  benchmarks/results/quality_digits.md and fast_digits.md);
* in two feature spaces: the shipped digits classifier's 64-d features (FD, KID) and the raw 64 pixels (FD_pix),
  which a feature network trained to ignore small noise cannot flatter; floors: 1,000 training digits;
* test bits/dim through the probability-flow ODE (RK45 1e-5, Hutchinson, uniform dequantization; the seed draws
  the dequantization and the probes), and the training time read from the run's log.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde import metrics
from scoresde.build import build_score, data_shape, load_dataset
from scoresde.data import data_levels, to_levels, to_unit
from scoresde.features import digits_features, load_digits_classifier
from scoresde.model import load_for_inference
from scoresde.plotting import save_image_grid

ROOT = Path(__file__).parents[1]
RUNS = {
    "VP + eps, uniform t (main job until now)": "outputs/digits",
    "EDM: preconditioning, EDM weighting, ln sigma ~ N(-1.2, 1.2^2)": "outputs/digits_edm",
    "EDM, ln sigma ~ N(0, 1.2^2) (shifted)": "outputs/digits_edm_p0",
    "rectified flow: velocity, logit-normal t (SD3)": "outputs/digits_rf",
    "rectified flow: velocity, uniform t (Liu et al.)": "outputs/digits_rf_uniform",
    "cosine VP: v, min-SNR-5, uniform t": "outputs/digits_cosine",
}
FAST = {  # label: (sampler, options)
    "DPM-Solver++ 2M": ("dpm_solver++", {"order": 2}),
    "DPM-Solver++ 3M": ("dpm_solver++", {"order": 3}),
    "UniPC 2": ("unipc", {"order": 2}),
    "UniPC 3": ("unipc", {"order": 3}),
}
ANY_BUDGET = {  # label: (sampler, steps, options)
    "UniPC 3, 50 NFE": ("unipc", 50, {"order": 3}),
    "SDE-DPM-Solver++ 2M, 50 NFE": ("sde_dpm_solver++", 50, {}),
    "EDM Heun, 51 NFE": ("edm_heun", 51, {}),
}


def mean_range(values: list[float], digits: int = 2) -> str:
    mean = f"{statistics.fmean(values):.{digits}f}"
    return f"{mean} ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else mean


def training_seconds(history: list[dict], batch_size: int) -> float:
    """Wall time of the training steps, from the log's images/s of each logging window."""
    total, last = 0.0, 0
    for record in history:
        total += (record["step"] - last) * batch_size / record["images_per_s"]
        last = record["step"]
    return total


def mean_range_fd(rows: list[dict], key: str, digits: int = 2) -> str:
    return mean_range([r[key] for r in rows], digits)


def evaluate_run(label: str, path: Path, args, net, seeds: range) -> dict:
    """Every measurement of one model (see the module docstring)."""
    cfg, sde, model = load_for_inference(path)
    history = sd.build.load_checkpoint(sd.build.resolve_checkpoint(path))[1].get("history", [])
    score = build_score(model, sde, cfg)
    shape, levels = data_shape(cfg), data_levels(cfg.data.dataset)
    data_range = tuple(cfg.data.data_range)
    test = load_dataset(cfg, "test")

    def unit(images: torch.Tensor) -> torch.Tensor:
        return ((images.double() + 0.5) / levels).float()

    f_ref = digits_features(unit(test.images), net)[0]
    p_ref = unit(test.images).reshape(test.images.shape[0], -1).double()
    train = load_dataset(cfg, "train").images[: args.n]
    floors = {
        "fd": metrics.frechet_distance(digits_features(unit(train), net)[0], f_ref),
        "fd_pix": metrics.frechet_distance(unit(train).reshape(args.n, -1).double(), p_ref),
        "kid": metrics.kid(digits_features(unit(train), net)[0], f_ref, subsets=100,
                           generator=torch.Generator().manual_seed(0))[0],
    }  # fmt: skip

    def measure(sampler: str, steps: int | None, seed: int, **options) -> dict:
        start = time.perf_counter()
        x, nfe = sd.sample(sde, score, (args.n, *shape), sampler=sampler, steps=steps, batch_size=500,
                           generator=sd.SampleNoise(seed, args.n), return_nfe=True, **options)  # fmt: skip
        seconds = time.perf_counter() - start
        q = unit(to_levels(x, levels, data_range))
        feats = digits_features(q, net)[0]
        kid = metrics.kid(feats, f_ref, subsets=100, generator=torch.Generator().manual_seed(0))[0]
        return {"fd": metrics.frechet_distance(feats, f_ref), "kid": kid, "nfe": nfe, "seconds": seconds,
                "fd_pix": metrics.frechet_distance(q.reshape(args.n, -1).double(), p_ref), "x": x}  # fmt: skip

    details, best = [], {}
    candidates = [(nfe, name, sampler, nfe, options) for nfe in (10, 20) for name, (sampler, options) in FAST.items()]
    if not args.quick:
        candidates += [("any", name, sampler, steps, options) for name, (sampler, steps, options) in ANY_BUDGET.items()]
    for budget, name, sampler, steps, options in candidates:
        rows = [measure(sampler, steps, seed, **options) for seed in seeds]
        mean_fd = statistics.fmean(r["fd"] for r in rows)
        details.append(f"| {label} | {name} | {rows[0]['nfe']} | {mean_range_fd(rows, 'fd')} | "
                       f"{mean_fd / floors['fd']:.2f} | {mean_range_fd(rows, 'fd_pix')} | "
                       f"{mean_range_fd(rows, 'kid', 1)} | {rows[0]['seconds']:.1f} |")  # fmt: skip
        print(details[-1], flush=True)
        for key in {budget, "any"} if not args.quick else {budget}:  # any budget: every sampler measured
            if key not in best or mean_fd < statistics.fmean(r["fd"] for r in best[key][1]):
                best[key] = (f"{name}, {rows[0]['nfe']} NFE" if key == "any" and budget != "any" else name, rows)
    bpd = None
    if not args.quick:
        bpd = []
        for seed in seeds:
            start = time.perf_counter()
            noise = sd.SampleNoise(seed, test.images.shape[0])
            value, _, nfe = sd.bits_per_dim(sde, score, test.images, levels=levels, data_range=data_range,
                                            generator=noise, batch_size=300)  # fmt: skip
            bpd.append(float(value.mean()))
            print(f"{label}: bits/dim seed {seed} {bpd[-1]:.4f} ({nfe} NFE, {time.perf_counter() - start:.0f} s)",
                  flush=True)  # fmt: skip
    return {"floors": floors, "details": details, "best": best, "bpd": bpd,
            "minutes": training_seconds(history, cfg.training.batch_size) / 60, "data_range": data_range}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=None, help="label=workdir,... (default: the six runs above)")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed, no any-budget samplers, no likelihood")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "processes.md"))
    parser.add_argument("--pictures", default=str(ROOT / "docs" / "processes_samples.png"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    runs = dict(item.split("=", 1) for item in args.runs.split(",")) if args.runs else RUNS
    seeds = range(1 if args.quick else args.seeds)
    net = load_digits_classifier()
    summary, details, pictures, floors = [], [], [], None
    for label, workdir in runs.items():
        path = (ROOT / workdir if not Path(workdir).is_absolute() else Path(workdir)) / "checkpoints"
        if not path.is_dir():
            print(f"skipping {label}: no checkpoints in {path}", flush=True)
            continue
        result = evaluate_run(label, path, args, net, seeds)
        floors = result["floors"]
        details += result["details"]
        cells = []
        for budget in (10, 20, "any"):
            if budget not in result["best"]:
                cells.append("-")
                continue
            name, rows = result["best"][budget]
            cells.append(f"{statistics.fmean(r['fd'] for r in rows) / floors['fd']:.2f} ({name})")
        rows10 = result["best"][10][1]
        bpd = mean_range(result["bpd"], 3) if result["bpd"] else "-"
        summary.append(f"| {label} | {' | '.join(cells)} | "
                       f"{statistics.fmean(r['fd_pix'] for r in rows10) / floors['fd_pix']:.2f} | "
                       f"{mean_range_fd(rows10, 'kid', 1)} | {bpd} | {result['minutes']:.1f} |")  # fmt: skip
        print(summary[-1], flush=True)
        pictures.append(to_unit(rows10[0]["x"][:16], result["data_range"]))
    if floors is None:
        raise SystemExit("no run to measure: train the models first (see the module docstring)")
    lines = [f"# Forward processes on the digits main job ({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/bench_processes.py`: {args.n} samples per seed, seeds {list(seeds)}, torch "
             f"{torch.__version__}, 2 threads, CPU. Floors (1,000 training digits against the test digits): FD "
             f"{floors['fd']:.2f} in the digits classifier's features, {floors['fd_pix']:.2f} in pixels, KID "
             f"{floors['kid']:.1f}.", "",
             "## Summary", "",
             "FD / floor: mean over the seeds, with the solver that gave it. FD_pix / floor and KID (in the "
             "classifier's features) at the 10-NFE winner. Bits/dim: test digits, RK45 1e-5.", "",
             "| process and recipe | FD / floor, 10 NFE | FD / floor, 20 NFE | FD / floor, any budget | "
             "FD_pix / floor, 10 NFE | KID, 10 NFE | test bits/dim | training (min) |",
             "|---|---|---|---|---|---|---|---|", *summary, "",
             "## Every sampler", "",
             "| model | sampler | NFE | FD | FD / floor | FD_pix | KID | time, seed 0 (s) |",
             "|---|---|---|---|---|---|---|---|", *details, ""]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)
    if pictures:
        save_image_grid(torch.cat(pictures), args.pictures, nrow=16)
        print(f"samples (one row per model, 10 NFE winner, seed 0) -> {args.pictures}")


if __name__ == "__main__":
    main()
