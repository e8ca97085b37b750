"""The GPU check: on a CUDA machine, run the CUDA-only tests, then measure the CIFAR-10 DDPM++ preset's training
throughput with each option of the training loop and its sampling throughput at 10 NFE, and print one table.

Training rows run the library's loop (:func:`scoresde.training.fit`, the loop ``scoresde train`` uses) on the
preset's network and loss at batch 128, on random 32x32 images (no dataset is read: throughput does not depend on
the pixels), for ``--steps`` timed steps after ``--warmup`` steps (which include compilation). Options: eager
float32, bfloat16 autocast, ``torch.compile``, channels-last, and all three together. The sampling row draws a
batch with DPM-Solver++ (2M, 10 NFE) from the same (untrained) network. Meant to finish in under 8 minutes on one
modern GPU::

    python benchmarks/bench_gpu.py                       # CUDA tests + the table
    python benchmarks/bench_gpu.py --skip-tests --only fp32,bf16
    python benchmarks/bench_gpu.py --device cpu --tiny   # the CPU parts (what the test suite runs)

``--tiny`` shrinks the network and the batch so that the CPU parts run in seconds; the table then says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import scoresde as sd
from scoresde.build import build_loss, build_model, build_score, build_sde, build_training_noise, data_shape
from scoresde.config import load_config
from scoresde.training import FitOptions, Objective, check_fit_options, fit

ROOT = Path(__file__).parents[1]
PRESET = "cifar10_vp_ddpmpp_continuous"
OPTIONS = {  # label: FitOptions fields
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "channels_last": {"channels_last": True},
    "all": {"precision": "bf16", "compile": True, "channels_last": True},
}
CUDA_TESTS = ["tests/test_devices.py", "tests/test_training_loop.py", "-k", "cuda or never_sync"]
TINY = ["model.net={nf = 16, ch_mult = [1, 2], num_res_blocks = 1, attn_resolutions = [16]}"]


def objective(cfg, batch_size: int) -> Objective:
    """The preset's network and loss on random images: the work of a training step without a dataset."""
    torch.manual_seed(0)
    sde, model = build_sde(cfg), build_model(cfg)
    draw_noise = build_training_noise(cfg, sde)
    shape = data_shape(cfg)

    def draw(step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = torch.rand((batch_size, *shape), generator=generator) * 2 - 1
        return {"x": x, **draw_noise(x, generator)}

    def make_loss(network):
        loss_fn = build_loss(cfg, sde, build_score(network, sde, cfg), network)
        return lambda batch: (loss_fn(batch["x"], **{k: v for k, v in batch.items() if k != "x"}), {})

    return Objective(model=model, draw=draw, make_loss=make_loss, lr=lambda step: cfg.training.lr,
                     metadata={"format": "bench-gpu", "config": cfg.to_dict()}, check_resume=lambda meta, path: None,
                     what="bench")  # fmt: skip


def train_rate(cfg, option: dict, device: torch.device, batch_size: int, steps: int, warmup: int) -> float:
    """Images/s of the timed steps (the log's windows after the warm-up window)."""
    opts = FitOptions(n_iters=warmup + steps, batch_size=batch_size, log_every=warmup if warmup else steps,
                      snapshot_every=10**9, keep=1, **option)  # fmt: skip
    check_fit_options(opts, device)
    with tempfile.TemporaryDirectory() as tmp:
        fit(objective(cfg, batch_size), opts, Path(tmp), device)
        records = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["step"] > warmup] or records
    return sum(r["images_per_s"] for r in timed) / len(timed)


def sample_rate(cfg, device: torch.device, batch_size: int) -> tuple[float, int]:
    """Images/s of DPM-Solver++ 2M at 10 NFE on the preset's (untrained) network; ``(rate, nfe)``."""
    torch.manual_seed(0)
    model = sd.model.score_model(build_model(cfg), cfg).to(device).eval()
    warnings.simplefilter("ignore", sd.sampling.SamplingDivergenceWarning)  # an untrained network diverges
    sd.sample(model, n=batch_size, sampler="dpm_solver++", steps=10, device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    _, nfe = sd.sample(model, n=batch_size, sampler="dpm_solver++", steps=10, device=device, return_nfe=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size / (time.perf_counter() - start), nfe


def run_tests() -> str:
    """Run the CUDA-only tests (the no-sync checks of the samplers and of the training loop among them)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "--tb=line", "-p", "no:cacheprovider",
                          *CUDA_TESTS], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    lines = run.stdout.strip().splitlines()
    summary = lines[-1] if lines else run.stderr.strip()[-300:]
    if run.returncode == 0:
        return f"passed: {summary}"
    failed = [line.removeprefix("FAILED ") for line in lines if line.startswith("FAILED ")]
    return f"FAILED: {summary}" + "".join(f"\n- {name}" for name in failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default=PRESET)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--only", default="", help="comma-separated option rows (default: all)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a small network and batch: the CPU parts in seconds")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run it on a GPU machine (or --device cpu --tiny for the CPU parts)",
              file=sys.stderr)  # fmt: skip
        return 2
    rows = [o for o in OPTIONS if not args.only or o in args.only.split(",")]
    unknown = sorted(set(args.only.split(",")) - set(OPTIONS)) if args.only else []
    if unknown:
        print(f"bench_gpu: unknown option row(s) {unknown}; choose from {list(OPTIONS)}", file=sys.stderr)
        return 2
    cfg = load_config(args.preset, TINY if args.tiny else [])
    start = time.perf_counter()
    tests = "skipped" if args.skip_tests else run_tests()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"# GPU check: {args.preset}{' (tiny network)' if args.tiny else ''} on {name}, torch {torch.__version__}",
        "",
        f"CUDA-only tests: {tests}",
        "",
        "| what | images/s | ratio to eager float32 |",
        "|---|---|---|",
    ]
    rates = {}
    for option in rows:
        rates[option] = train_rate(cfg, OPTIONS[option], device, args.batch_size, args.steps, args.warmup)
        base = rates.get("fp32", rates[option])
        lines.append(
            f"| training, batch {args.batch_size}, {option} | {rates[option]:.1f} | {rates[option] / base:.2f} |"
        )
        print(lines[-1], flush=True)
    rate, nfe = sample_rate(cfg, device, args.batch_size)
    lines.append(f"| sampling, DPM-Solver++ 2M, {nfe} NFE, batch {args.batch_size} | {rate:.1f} | - |")
    lines += ["", f"total {time.perf_counter() - start:.0f} s"]
    print("\n".join(lines))
    return 0 if not tests.startswith("FAILED") else 1


if __name__ == "__main__":
    sys.exit(main())
