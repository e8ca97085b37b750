"""Memory of training on a large image folder: decoded into memory against the memory-mapped cache of levels.

Generates ``-n`` random 32x32 RGB PNGs (default 100,000) in a temporary folder, then trains a small DDPM++ on it for
``--steps`` steps with ``data.storage = "memory"`` and ``"memmap"`` (decoded by ``--workers`` processes into a cache
file, then read memory-mapped, one seeded order per epoch), each in a fresh process, and reports the peak resident
memory of the training process next to the same training on a 100-image folder (the model, optimizer, torch and
the interpreter: the baseline), the decoding time and the training throughput::

    python benchmarks/bench_image_folder.py [-n 100000] [--steps 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parents[1]
MODEL = "model.net={nf = 16, ch_mult = [1, 2], num_res_blocks = 1, attn_resolutions = [8]}"
MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def make_folder(root: Path, n: int, seed: int = 0) -> float:
    """``n`` random 32x32 PNGs in sub-folders of 1,000; returns the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return time.perf_counter() - start


def train_peak(folder: Path, storage: str, cache: Path, workers: int, steps: int, workdir: Path) -> dict:
    """Train in a fresh process; its peak RSS (MiB), the wall time and the throughput of its last log window."""
    overrides = ["data.dataset=image_folder", f"data.root={folder}", "data.channels=3", "data.image_size=32",
                 f"data.storage={storage}", f"data.cache={cache}", f"data.workers={workers}", MODEL,
                 f"training.n_iters={steps}", f"training.log_every={steps // 2}", "training.snapshot_every=100000",
                 "training.batch_size=128", "training.warmup=0", "sampling.steps=2"]  # fmt: skip
    config = str(ROOT / "configs" / "digits_vp.toml")
    command = [sys.executable, "-m", "scoresde.cli", "--threads", "2", "train", config, "--workdir", str(workdir),
               "--no-progress", *[item for o in overrides for item in ("--set", o)]]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    rss = int(run.stdout.split()[-1]) / 1024
    return {"rss_mib": rss, "seconds": seconds, "images_per_s": records[-1]["images_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "image_folder.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = make_folder(tmp / "large", args.n)
        make_folder(tmp / "small", 100, seed=1)
        base = train_peak(tmp / "small", "memory", tmp / "cache", 0, args.steps, tmp / "w0")
        rows = [("100 images, memory (baseline)", base)]
        for storage in ("memmap", "memory"):
            got = train_peak(tmp / "large", storage, tmp / "cache", args.workers, args.steps, tmp / f"w_{storage}")
            rows.append((f"{args.n:,} images, {storage}", got))
            print(rows[-1], flush=True)
        again = train_peak(tmp / "large", "memmap", tmp / "cache", args.workers, args.steps, tmp / "w_again")
        rows.append((f"{args.n:,} images, memmap, cache already decoded", again))
        cache_mib = sum(p.stat().st_size for p in (tmp / "cache").glob("*.npy")) / 2**20
    lines = [
        f"# Training on a large image folder ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/bench_image_folder.py -n {args.n}`: random 32x32 RGB PNGs (written in {made:.0f} s), a "
        f"small DDPM++ ({MODEL}), batch 128, {args.steps} steps, each run in a fresh process, 2 threads, CPU; memmap "
        f"decoded by {args.workers} worker processes into a {cache_mib:.0f} MiB cache file. Peak RSS: the training "
        "process's maximum resident memory (the decoding workers are separate processes, each below it).",
        "",
        "| folder, data.storage | peak RSS (MiB) | over the baseline (MiB) | wall time (s) | training images/s |",
        "|---|---|---|---|---|",
    ]
    for label, row in rows:
        lines.append(f"| {label} | {row['rss_mib']:.0f} | {row['rss_mib'] - base['rss_mib']:.0f} | "
                     f"{row['seconds']:.0f} | {row['images_per_s']:.0f} |")  # fmt: skip
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
