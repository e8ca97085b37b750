"""Post-hoc EMA on the main job: sample quality of reconstructed EMA lengths against the classic EMA of the same run.

The run is the main job's config with ``training.ema_type = "posthoc"`` (the training itself is unchanged: the
power-function profiles of relative lengths 0.05 and 0.10 are kept beside the classic EMA, and snapshotted every
``training.posthoc_every`` steps). Every row draws 1,000 samples per seed with the main job's sampler (PF-ODE Heun,
50 steps, one noise stream per sample) and reports FD in the shipped digits classifier's features and FD_pix in
pixels against the 297 test digits, next to their floors (1,000 training digits)::

    scoresde train configs/digits_vp.toml --workdir outputs/digits_posthoc --set training.ema_type=posthoc
    python benchmarks/bench_posthoc_digits.py outputs/digits_posthoc [--lengths 0.03,0.05,0.1] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from digits_spaces import DigitsSpaces

import scoresde as sd
from scoresde.training import save_posthoc_checkpoint

ROOT = Path(__file__).parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a workdir trained with training.ema_type = 'posthoc'")
    parser.add_argument("--lengths", default="0.02,0.03,0.05,0.07,0.1,0.15,0.2,0.28")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "posthoc_digits.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    run = Path(args.run)
    classic = sd.load(run / "checkpoints")
    raw = sd.load(run / "checkpoints", ema=False)
    spaces = DigitsSpaces(classic.config, classic.levels, classic.data_range, args.n)
    cfg = classic.config.training
    lines = [
        f"# Post-hoc EMA on the main job ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/bench_posthoc_digits.py {_shown(run)}`: one run of the main job's config with "
        f'`training.ema_type = "posthoc"` (profiles {cfg.posthoc_lengths}, snapshots every {cfg.posthoc_every} '
        f"steps, {cfg.n_iters} steps); PF-ODE Heun 50 steps (101 NFE), {args.n} samples per seed (seeds "
        f"{args.seeds}; mean, range in brackets); FD in the shipped digits classifier's features and FD_pix in "
        f"pixels against the test digits. Floors ({args.n} training digits): FD **{spaces.floors[0]:.2f}**, FD_pix "
        f"**{spaces.floors[1]:.2f}**. torch {torch.__version__}, 2 threads, CPU.",
        "",
        "| weights | FD | FD / floor | FD_pix | FD_pix / floor |",
        "|---|---|---|---|---|",
    ]
    rows = [(f"classic EMA {cfg.ema} with warm-up (the default)", classic), ("raw weights (no EMA)", raw)]
    with tempfile.TemporaryDirectory() as tmp:
        for length in (float(s) for s in args.lengths.split(",")):
            path = save_posthoc_checkpoint(run, length, Path(tmp) / f"{length}")
            rows.append((f"post-hoc EMA, sigma_rel {length:g}", sd.load(path)))
        for label, model in rows:
            got = []
            for seed in seeds:
                x = sd.sample(model, n=args.n, sampler="ode", steps=50, method="heun",
                              generator=sd.SampleNoise(seed, args.n), batch_size=500)  # fmt: skip
                got.append(spaces.fd(x))
            fd, fd_pix = (statistics.fmean(g[i] for g in got) for i in range(2))
            lines.append(f"| {label} | {fd:.2f} {_span(got, 0)} | {fd / spaces.floors[0]:.2f} | {fd_pix:.3f} "
                         f"{_span(got, 1, 3)} | {fd_pix / spaces.floors[1]:.2f} |")  # fmt: skip
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def _span(rows: list[tuple[float, ...]], i: int, digits: int = 2) -> str:
    return f"({min(r[i] for r in rows):.{digits}f}-{max(r[i] for r in rows):.{digits}f})"


if __name__ == "__main__":
    main()
