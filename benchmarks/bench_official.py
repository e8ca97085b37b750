"""The paper's released checkpoints in scoresde: fidelity, conversion time and forward time.

1. Fidelity: the three small checkpoints in the released format (tests/data/official) through
   ``scoresde.load_official``: largest difference to the official code's recorded network
   outputs (raw and EMA weights) and scores (every score convention), relative to the largest
   reference value. Goal: < 3e-5 (float32 round-off; the references' own is <= 7e-6).
2. Conversion of the released CIFAR-10 networks: a checkpoint in the released format with the
   recorded key names and shapes (random values; the released files cannot be downloaded here)
   converted with ``convert_official`` (read with weights_only, map, check, write raw + EMA as
   safetensors, hash the source), against a baseline measured in the same run: the plain
   ``torch.load`` of the file plus a safetensors write of the same tensors.
3. One forward pass (batch 8, 32x32, 2 threads) of each converted network, next to the time the
   reference's own network took on this CPU (recorded in the reference facts: NCSN++ cont 1.23 s,
   DDPM++ cont 1.01 s, DDPM++ deep 1.73 s).

    python benchmarks/bench_official.py
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from scoresde.build import build_score
from scoresde.model import load_for_inference
from scoresde.official import convert_official, load_official

ROOT = Path(__file__).parents[1]
DATA = ROOT / "tests" / "data" / "official"
NETWORKS = {  # preset: recorded keys file
    "ve/cifar10_ncsnpp_continuous": "keys_ve_cifar10_ncsnpp_continuous",
    "ve/cifar10_ncsnpp_deep_continuous": "keys_ve_cifar10_ncsnpp_deep_continuous",
    "vp/cifar10_ddpmpp_continuous": "keys_vp_cifar10_ddpmpp_continuous",
    "vp/cifar10_ddpmpp_deep_continuous": "keys_vp_cifar10_ddpmpp_deep_continuous",
    "vp/cifar10_ddpm": "keys_vp_ddpm_cifar10",
}
REFERENCE_FORWARD = {"ve/cifar10_ncsnpp_continuous": 1.23, "vp/cifar10_ddpmpp_continuous": 1.01,
                     "vp/cifar10_ddpmpp_deep_continuous": 1.73}  # fmt: skip


def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).abs().max() / ref.double().abs().max())


def fidelity() -> list[str]:
    rows = ["| checkpoint | outputs, raw | outputs, EMA | scores (conventions) | worst |", "|---|---|---|---|---|"]
    for name in ("tiny_ve_ncsnpp", "tiny_vp_ddpmpp", "tiny_ddpm"):
        with np.load(DATA / f"{name}.npz") as arrays:
            a = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
        config = json.loads((DATA / f"{name}.json").read_text())["config"]
        errors = {}
        for ema in (False, True):
            _, model, _ = load_official(DATA / f"{name}.pth", config, ema=ema)
            with torch.no_grad():
                errors[ema] = rel(model(a["x"], a["labels"]), a["out_ema" if ema else "out_raw"])
        cases = {"VE": ("vesde", True, "score_ema")} if name == "tiny_ve_ncsnpp" else {
            "VP": ("vpsde", True, "score_ema_vp"), "sub-VP": ("subvpsde", True, "score_ema_subvp"),
            "VP discrete": ("vpsde", False, "score_ema_vp_discrete")}  # fmt: skip
        scores = []
        for label, (sde, continuous, key) in cases.items():
            cfg = json.loads(json.dumps(config))
            cfg["training"].update(sde=sde, continuous=continuous)
            _, _, score = load_official(DATA / f"{name}.pth", cfg)
            with torch.no_grad():
                scores.append((label, rel(score(a["x"], a["t"]), a[key])))
        worst = max([errors[False], errors[True]] + [e for _, e in scores])
        text = ", ".join(f"{label} {e:.1e}" for label, e in scores)
        rows.append(f"| {name} | {errors[False]:.1e} | {errors[True]:.1e} | {text} | {worst:.1e} |")
    return rows


def random_checkpoint(keys: dict, path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    model, ema = {}, {}
    m = keys["config"]["model"]
    for row in keys["state_dict"]:
        if row["key"] == "module.sigmas":
            value = torch.exp(torch.linspace(math.log(m["sigma_max"]), math.log(m["sigma_min"]), m["num_scales"],
                                             dtype=torch.float64))  # fmt: skip
        else:
            value = torch.randn(row["shape"], generator=gen) * 0.05
        model[row["key"]] = value
        if row.get("ema_index") is not None:
            ema[row["ema_index"]] = value.clone()
    torch.save({"optimizer": {}, "model": model, "step": 400001,
                "ema": {"decay": 0.9999, "num_updates": 400000, "shadow_params": [ema[i] for i in range(len(ema))]}},
               path)  # fmt: skip


def conversions(tmp: Path) -> list[str]:
    rows = ["| network (preset) | parameters | .pth | convert | baseline: torch.load + safetensors write | ratio | "
            "reload (load_for_inference) | forward, batch 8 | reference code's forward (recorded) |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for preset, keys_file in NETWORKS.items():
        keys = json.loads((DATA / f"{keys_file}.json").read_text())
        source = tmp / f"{keys_file}.pth"
        random_checkpoint(keys, source)
        start = time.perf_counter()
        state = torch.load(source, map_location="cpu", weights_only=True)
        tensors = {k: v.float().contiguous() for k, v in state["model"].items()}
        tensors |= {f"ema.{i}": v.contiguous() for i, v in enumerate(state["ema"]["shadow_params"])}
        save_file(tensors, str(tmp / "baseline.safetensors"))
        baseline = time.perf_counter() - start
        del state, tensors
        start = time.perf_counter()
        path = convert_official(source, preset, tmp / preset.replace("/", "_"))
        convert = time.perf_counter() - start
        start = time.perf_counter()
        cfg, sde, model = load_for_inference(path)
        reload = time.perf_counter() - start
        score = build_score(model, sde, cfg)
        t = torch.full((8,), 0.5)
        with torch.no_grad():
            score(x, t)  # warm-up
            start = time.perf_counter()
            score(x, t)
            forward = time.perf_counter() - start
        ref = REFERENCE_FORWARD.get(preset)
        size = source.stat().st_size / 2**20
        recorded = f"{ref:.2f} s" if ref else "-"
        rows.append(f"| {preset} | {keys['total_params']:,} | {size:.0f} MiB | {convert:.1f} s | {baseline:.1f} s | "
                    f"{convert / baseline:.2f} | {reload:.1f} s | {forward:.2f} s | {recorded} |")  # fmt: skip
        for file in (source, path, path.with_suffix(".json"), tmp / "baseline.safetensors"):
            file.unlink()
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "official.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    lines = ["# The paper's released checkpoints in scoresde", "",
             f"Measured {time.strftime('%Y-%m-%d')}, 2 CPU threads, torch {torch.__version__}. "
             "Produced by `benchmarks/bench_official.py`.", "",
             "## Fidelity to the official code", "",
             "Largest difference over the largest reference value (goal < 3e-5).", ""]  # fmt: skip
    lines += fidelity()
    print("\n".join(lines), flush=True)
    lines += ["", "## Converting the CIFAR-10 networks (released format, recorded names and shapes, random values)",
              "", "Ratio: conversion time over the baseline (the unavoidable read and write of the same tensors).",
              ""]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        lines += conversions(Path(tmp))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
