"""Per-step overhead of every fixed-grid sampler, against one forward pass of the digits network.

The overhead is everything a sampler does besides evaluating the network: schedule
coefficients, the update's tensor arithmetic, noise, the hook loop and the NFE counting.
It is measured with a free score function (it returns a tensor computed once) on the
digits model's shape at batch 256, and divided by the time of one forward pass of the
main job's network (``configs/digits_vp.toml``, a fresh initialisation: the time does not
depend on the weights) at the same batch, measured in the same run. The goal is < 5 %.

    python benchmarks/bench_overhead.py [--batch 256] [--steps 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.build import build_model, build_score
from scoresde.config import load_config

ROOT = Path(__file__).parents[1]
CASES = {  # label: (sampler, options)
    "DDIM": ("ddim", {}),
    "Euler-Maruyama": ("euler_maruyama", {}),
    "PF-ODE Heun": ("ode", {"method": "heun"}),
    "DPM-Solver++ 2M": ("dpm_solver++", {"order": 2}),
    "DPM-Solver++ 3M": ("dpm_solver++", {"order": 3}),
    "DPM-Solver++ 3S": ("dpm_solver++", {"order": 3, "multistep": False}),
    "DPM-Solver 3M": ("dpm_solver", {"order": 3}),
    "UniPC 3": ("unipc", {"order": 3}),
    "EDM Heun (churn 10)": ("edm_heun", {"churn": 10.0}),
    "SDE-DPM-Solver++ 2M": ("sde_dpm_solver++", {}),
}


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="NFE of each timed run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overhead.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(ROOT / "configs" / "digits_vp.toml")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sde = sd.VPSDE()
    network = build_score(model, sde, cfg)
    shape = (args.batch, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    x = torch.randn(shape)
    t = torch.full((args.batch,), 0.5)
    with torch.no_grad():
        network(x, t)
        forward = best_of(lambda: network(x, t), 10)
    fixed = -0.1 * torch.randn(shape)

    def free(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return fixed

    lines = [f"# Per-step sampler overhead ({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/bench_overhead.py`: batch {args.batch} of {tuple(shape[1:])}, {args.steps} NFE per "
             f"run (best of 5), a free score function; torch {torch.__version__}, 2 threads, CPU. One forward pass "
             f"of the digits network at this batch: **{1000 * forward:.1f} ms** (same run).", "",
             "| sampler | options | overhead per evaluation (ms) | / one forward pass |",
             "|---|---|---|---|"]  # fmt: skip
    for label, (sampler, options) in CASES.items():
        fast = sd.sampling.evals_per_step(sampler, options) is not None
        steps = args.steps if fast else args.steps // (2 if options.get("method") == "heun" else 1)

        def run(sampler=sampler, steps=steps, options=options):
            return sd.sample(sde, free, shape, sampler=sampler, steps=steps, return_nfe=True,
                             generator=torch.Generator().manual_seed(0), **options)  # fmt: skip

        nfe = run()[1]
        seconds = best_of(run, 5)
        per_eval = seconds / nfe
        opts = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
        share = 100 * per_eval / forward
        lines.append(f"| {label} | {opts} | {1000 * per_eval:.3f} | {share:.2f} % |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
