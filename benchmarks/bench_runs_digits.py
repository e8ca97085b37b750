"""Main-job training runs side by side: sample quality in two feature spaces over several noise seeds, test bits/dim,
and training time, measured in the same run (e.g. the float32 main job against the same config with the training
speed options)::

    scoresde train configs/digits_vp.toml --workdir outputs/digits
    scoresde train configs/digits_vp.toml --workdir outputs/digits_fast --set training.precision=bf16 \\
        --set training.compile=true --set training.channels_last=true
    python benchmarks/bench_runs_digits.py fp32=outputs/digits/checkpoints fast=outputs/digits_fast/checkpoints

Each row: the run's EMA weights; 1,000 samples per seed (one noise stream per sample) with UniPC order 3 at 10 NFE
and PF-ODE Heun at 50 steps (the main job's sampler); FD in the shipped digits classifier's features and FD_pix in
pixels against the test digits, over their floors (1,000 training digits); test bits/dim with ``evaluate``'s
likelihood (fixed-grid adams, 40 NFE, the same dequantization and probes for every run); training images/s as the
run's log recorded it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from digits_spaces import DigitsSpaces

import scoresde as sd
from scoresde.build import load_dataset
from scoresde.noise import LIKELIHOOD_DRAWS, SampleNoise

SAMPLERS = {"UniPC-3, 10 NFE": {"sampler": "unipc", "steps": 10, "order": 3},
            "PF-ODE Heun, 50 steps": {"sampler": "ode", "steps": 50, "method": "heun"}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=CHECKPOINTS")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 beside another job on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [(text.split("=", 1)[0], Path(text.split("=", 1)[1])) for text in args.runs]
    first = sd.load(runs[0][1])
    spaces = DigitsSpaces(first.config, first.levels, first.data_range, args.n)
    test = load_dataset(first.config, "test")
    when = time.strftime("%Y-%m-%d")
    print(f"# Main-job runs side by side ({when}, torch {torch.__version__}, {args.threads} thread(s))\n")
    print(
        f"{args.n} samples per seed (seeds {args.seeds}; mean, range in brackets). Floors: FD "
        f"{spaces.floors[0]:.2f}, FD_pix {spaces.floors[1]:.3f}. Bits/dim: the {len(test)} test digits.\n"
    )
    print("| run | training images/s (log median) | sampler | FD / floor | FD_pix / floor | test bits/dim |")
    print("|---|---|---|---|---|---|")
    for label, path in runs:
        model = sd.load(path)
        speed = _images_per_s(path)
        noise = SampleNoise(0, range(len(test)), draws=LIKELIHOOD_DRAWS)
        bpd, _, _ = sd.bits_per_dim(model, test.images, levels=test.levels, data_range=model.data_range,
                                    generator=noise, method="adams", batch_size=500)  # fmt: skip
        for name, kw in SAMPLERS.items():
            got = []
            for seed in seeds:
                x = sd.sample(model, n=args.n, generator=sd.SampleNoise(seed, args.n), batch_size=500, **kw)
                got.append(spaces.fd(x))
            fd, pix = ([g[i] / spaces.floors[i] for g in got] for i in range(2))
            print(f"| {label} | {speed:.0f} | {name} | {statistics.fmean(fd):.2f} ({min(fd):.2f}-{max(fd):.2f}) | "
                  f"{statistics.fmean(pix):.2f} ({min(pix):.2f}-{max(pix):.2f}) | {float(bpd.mean()):.3f} |",
                  flush=True)  # fmt: skip


def _images_per_s(checkpoints: Path) -> float:
    log = checkpoints.parent / "log.jsonl"
    rates = [json.loads(line).get("images_per_s") for line in log.read_text().splitlines() if line.strip()]
    rates = [r for r in rates if r]
    return statistics.median(rates) if rates else float("nan")


if __name__ == "__main__":
    main()
