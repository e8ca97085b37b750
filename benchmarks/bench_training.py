"""Training throughput: the library's trainer against a bare PyTorch loop, same run.

Both train the digits model of ``configs/digits_vp.toml`` (DDPM++ small, batch 128, Adam)
for the same number of steps. The bare loop does only what any DSM loop must do (draw a
batch, perturb it, forward, backward, clip, Adam step); the library adds dequantization,
the EMA, the learning-rate warmup, loss logging and its input checks. Throughput is
measured after a warm-up, excluding checkpoints and snapshot sampling.

    python benchmarks/bench_training.py [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from scoresde.build import build_model
from scoresde.config import load_config
from scoresde.data import load_digits
from scoresde.train import train

ROOT = Path(__file__).parents[1]


def bare_loop(cfg, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.training.lr)
    images = load_digits("train").images.float() / 16 * 2 - 1
    b0, b1 = cfg.sde.beta_min, cfg.sde.beta_max
    gen = torch.Generator().manual_seed(0)
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        x = images[torch.randint(0, len(images), (cfg.training.batch_size,), generator=gen)]
        t = 1e-5 + (1 - 1e-5) * torch.rand(x.shape[0], generator=gen)
        z = torch.randn(x.shape, generator=gen)
        log_mean = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
        std = torch.sqrt(1 - torch.exp(2 * log_mean))[:, None, None, None]
        xt = torch.exp(log_mean)[:, None, None, None] * x + std * z
        loss = ((model(xt, 999 * t) - z) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps * cfg.training.batch_size / (time.perf_counter() - start)


def library(cfg, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg.training.n_iters = steps + warmup
        cfg.training.log_every = warmup if warmup else steps
        cfg.training.snapshot_every = 10**9
        train(cfg, tmp, progress=False)
        records = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["step"] > warmup]
    return sum(r["images_per_s"] for r in timed) / len(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(ROOT / "configs" / "digits_vp.toml")
    rows = []
    for _ in range(args.rounds):  # interleave to share any drift in machine speed
        rows.append((bare_loop(cfg, args.steps, args.warmup),
                     library(load_config(ROOT / "configs" / "digits_vp.toml"), args.steps, args.warmup)))  # fmt: skip
    bare = sum(r[0] for r in rows) / len(rows)
    lib = sum(r[1] for r in rows) / len(rows)
    print(f"digits DDPM++ small (nf=32), batch {cfg.training.batch_size}, {args.steps} timed steps x {args.rounds}, "
          f"torch {torch.__version__}, 2 threads\n")  # fmt: skip
    print("| loop | images/s | ratio to bare loop |")
    print("|---|---|---|")
    print(f"| bare PyTorch loop | {bare:.0f} | 1.00 |")
    print(f"| scoresde.train | {lib:.0f} | {lib / bare:.3f} |")


if __name__ == "__main__":
    main()
