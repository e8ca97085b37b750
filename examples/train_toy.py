"""Train a score model on 2-D data from Python, then sample it with two samplers.

python examples/train_toy.py [--toy moons] [--iters 2000] [--out runs/example_toy]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import scoresde as sd
from scoresde.config import load_config
from scoresde.data import toy_data
from scoresde.plotting import save_scatter_grid
from scoresde.train import train

ROOT = Path(__file__).parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", default="moons", choices=["mixture", "moons", "checkerboard", "swiss_roll"])
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--out", default="runs/example_toy")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(ROOT / "configs" / "toy_mixture.toml",
                      [f"data.toy={args.toy}", f"training.n_iters={args.iters}",
                       f"training.snapshot_every={args.iters}", "sampling.steps=100"])  # fmt: skip
    checkpoint = train(cfg, args.out, overwrite=True, progress=True)
    model = sd.load(checkpoint)  # the network with its process (model.sde) and data shape
    gen = torch.Generator().manual_seed(0)
    sde_samples = sd.sample(model, n=4000, sampler="euler_maruyama", steps=500, generator=gen)
    ode_samples, nfe = sd.sample(model, n=4000, sampler="ode", return_nfe=True)
    panels = [("data", toy_data(args.toy, 4000)), ("Euler-Maruyama 500", sde_samples),
              (f"PF-ODE rk45 ({nfe} NFE)", ode_samples)]  # fmt: skip
    path = save_scatter_grid(panels, Path(args.out) / "samples.png", cols=3)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
