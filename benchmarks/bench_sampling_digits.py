"""Sampling throughput (images/s) and peak memory of the digits model, per sampler.

Each sampler runs in a fresh subprocess so that its peak resident memory (CPU) or peak
allocated memory (CUDA) is its own; the baseline row is the process after loading the
model, before sampling.

    python benchmarks/bench_sampling_digits.py [CHECKPOINT] [-n 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
CASES = [
    ("baseline (model loaded, no sampling)", None, None, {}),
    ("euler_maruyama", "euler_maruyama", 1000, {}),
    ("ancestral", "ancestral", 1000, {}),
    ("pc (reverse diffusion + langevin)", "pc", 1000, {"snr": 0.16}),
    ("ode rk45 (1e-5)", "ode", None, {}),
    ("ode heun", "ode", 50, {"method": "heun"}),
    ("ddim (quadratic grid)", "ddim", 50, {"grid": "quadratic"}),
]


def child(checkpoint: str, index: int, n: int) -> None:
    import torch

    from scoresde.build import build_score, data_shape
    from scoresde.model import load_for_inference
    from scoresde.sampling import sample

    torch.set_num_threads(2)
    label, sampler, steps, options = CASES[index]
    cfg, sde, model = load_for_inference(checkpoint)
    score = build_score(model, sde, cfg)
    out = {"label": label, "n": n}
    if sampler is not None:
        options = dict(options)
        grid = options.pop("grid", "uniform")
        start = time.perf_counter()
        _, nfe = sample(sde, score, (n, *data_shape(cfg)), sampler=sampler, steps=steps, grid=grid,
                        generator=torch.Generator().manual_seed(0), return_nfe=True, **options)  # fmt: skip
        seconds = time.perf_counter() - start
        out |= {"nfe": nfe, "seconds": seconds, "images_per_s": n / seconds}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(ROOT / "outputs" / "digits" / "checkpoints"))
    parser.add_argument("-n", type=int, default=256)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.checkpoint, args.child, args.n)
        return
    print(f"digits model {args.checkpoint}, {args.n} samples per run, 2 threads, CPU\n")
    print("| sampler | steps | NFE | images/s | time (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for i, (label, _, steps, _) in enumerate(CASES):
        run = subprocess.run([sys.executable, __file__, args.checkpoint, "-n", str(args.n), "--child", str(i)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        r = json.loads(run.stdout.strip().splitlines()[-1])
        if "nfe" in r:
            print(f"| {label} | {steps or 'adaptive'} | {r['nfe']} | {r['images_per_s']:.1f} | {r['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} |")  # fmt: skip
        else:
            print(f"| {label} | - | - | - | - | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
