"""Training throughput on 2 CPU cores: the library's loop against a bare PyTorch loop, and each option of the loop,
in one run.

Every row trains the main job's model (``configs/digits_vp.toml``: DDPM++ small, batch 128, Adam) for the same
number of steps. The bare loop does only what any DSM loop must do (draw a batch, perturb it, forward, backward,
clip, Adam step); the library adds dequantization, the EMA, the learning-rate warmup, logging and its input checks.
Throughput is measured after a warm-up (which includes compilation), excluding checkpoints and snapshot sampling;
rounds are interleaved so that drift in machine speed is shared.

    python benchmarks/bench_training.py [--steps 150] [--rounds 2] [--only fp32,bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scoresde.build import build_model
from scoresde.config import load_config
from scoresde.data import load_digits
from scoresde.train import train

ROOT = Path(__file__).parents[1]
OPTIONS = {  # label: config overrides of the library rows
    "fp32": [],
    "bf16": ["training.precision=bf16"],
    "channels_last": ["training.channels_last=true"],
    "compile": ["training.compile=true"],
    "bf16+compile": ["training.precision=bf16", "training.compile=true"],
    "all": ["training.precision=bf16", "training.compile=true", "training.channels_last=true"],
}


def bare_loop(cfg, steps: int, warmup: int, fused: bool) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.training.lr, fused=fused or None, foreach=None if fused else True)
    images = load_digits("train").images.float() / 16 * 2 - 1
    b0, b1 = cfg.sde.beta_min, cfg.sde.beta_max
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
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


def op_shares(cfg, steps: int = 10) -> list[tuple[str, float]]:
    """Where a training step's CPU time goes: the share of the profiled self time of the heaviest operators in
    ``steps`` steps of the bare loop (after a warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    bare_loop(cfg, 3, 0, fused=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bare_loop(cfg, steps, 0, fused=True)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / total) for e in events[:6]]


def library(overrides: list[str], steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs" / "digits_vp.toml", [
            *overrides, f"training.n_iters={steps + warmup}", f"training.log_every={warmup}",
            "training.snapshot_every=1000000"])  # fmt: skip
        train(cfg, tmp, progress=False)
        records = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["step"] > warmup]
    return sum(r["images_per_s"] for r in timed) / len(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated option rows (default: all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "training.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(ROOT / "configs" / "digits_vp.toml")
    rows = [o for o in OPTIONS if not args.only or o in args.only.split(",")]
    got: dict[str, list[float]] = {"bare": [], "bare_foreach": [], **{o: [] for o in rows}}
    for _ in range(args.rounds):  # interleaved: drift in machine speed is shared by every row
        got["bare"].append(bare_loop(cfg, args.steps, args.warmup, fused=True))
        got["bare_foreach"].append(bare_loop(cfg, args.steps, args.warmup, fused=False))
        for option in rows:
            got[option].append(library(OPTIONS[option], args.steps, args.warmup))
            print(option, f"{got[option][-1]:.0f} images/s", flush=True)
    mean = {k: statistics.fmean(v) for k, v in got.items()}
    shares = op_shares(cfg)
    bare, before = mean["bare"], mean["bare_foreach"]
    lines = [
        f"# Training throughput ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/bench_training.py`: digits DDPM++ small (nf=32, 1.0 M parameters), batch "
        f"{cfg.training.batch_size}, {args.steps} timed steps after {args.warmup} warm-up steps, mean of "
        f"{args.rounds} interleaved rounds (range in brackets), torch {torch.__version__}, 2 threads, CPU. "
        "'before': a bare loop with the foreach Adam the library used before the fused one (the library's loop "
        "measured within 0.1 % of it).",
        "",
        "| loop | images/s | / bare loop | / before |",
        "|---|---|---|---|",
        f"| bare PyTorch loop, foreach Adam (before) | {before:.0f} {_span(got['bare_foreach'])} | "
        f"{before / bare:.3f} | 1.00 |",
        f"| bare PyTorch loop, fused Adam | {bare:.0f} {_span(got['bare'])} | 1.000 | {bare / before:.2f} |",
    ]
    for option in rows:
        name = "scoresde.train" + ("" if option == "fp32" else f", {option}")
        lines.append(f"| {name} | {mean[option]:.0f} {_span(got[option])} | {mean[option] / bare:.3f} | "
                     f"{mean[option] / before:.2f} |")  # fmt: skip
    lines += ["", "Where the bare loop's step spends its CPU time (torch profiler, self time, 10 steps):", "",
              "| operator | share |", "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {share:.1%} |" for name, share in shares]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _span(values: list[float]) -> str:
    return f"({min(values):.0f}-{max(values):.0f})"


if __name__ == "__main__":
    main()
