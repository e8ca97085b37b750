"""The ``convert-official`` command: a score_sde_pytorch checkpoint as a scoresde checkpoint.

``scoresde convert-official checkpoint_8.pth --config vp/cifar10_ddpmpp_continuous --out runs/vp``
writes ``runs/vp/checkpoints/checkpoint_<step>.safetensors`` (raw and EMA weights, the config
with the reference's score convention); ``sample``, ``likelihood``, ``evaluate``, ``inpaint``
and the other commands then take ``runs/vp/checkpoints``.
"""

from __future__ import annotations

import time
from pathlib import Path

from .args import FORMATTER


def add_parsers(sub) -> None:
    """Add ``convert-official`` to the CLI's subparsers."""
    fmt = FORMATTER
    from ..official import PRESETS

    p = sub.add_parser("convert-official", help="convert a checkpoint of the paper's code (score_sde_pytorch .pth)",
                       formatter_class=fmt,
                       description="Read a checkpoint written by the official score_sde_pytorch code (the paper's "
                                   "released models; loaded with torch.load(weights_only=True), so nothing in it "
                                   "runs), map every weight onto the scoresde network of its config by name and "
                                   "shape, and write a scoresde checkpoint with the raw and EMA weights under "
                                   "OUT/checkpoints.\n\npresets (the release folders):\n  "
                                   + "\n  ".join(PRESETS),
                       epilog="example:\n  scoresde convert-official exp/vp/cifar10_ddpmpp_continuous/checkpoint_8.pth "
                              "--config vp/cifar10_ddpmpp_continuous --out runs/vp_ddpmpp --data-root data/cifar10\n"
                              "  scoresde sample runs/vp_ddpmpp/checkpoints --sampler dpm_solver++ --steps 20 "
                              "--out samples.png")  # fmt: skip
    p.add_argument("checkpoint", help="the .pth file (checkpoint_<k>.pth)")
    p.add_argument("--config", required=True, metavar="NAME_OR_JSON",
                   help="a preset (listed above) or a JSON file with the reference config's model, data and "
                        "training sections")  # fmt: skip
    p.add_argument("--out", required=True, help="folder for the converted run (must not hold checkpoints yet)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="the dataset's folder for likelihood, evaluate and the tasks (CIFAR-10 python batches, or "
                        "an image folder for the other models)")  # fmt: skip


def convert_official_command(args) -> int:
    from ..checkpoint import latest_checkpoint
    from ..official import convert_official, official_config

    source = Path(args.checkpoint)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint {source} not found")
    official_config(args.config, args.data_root)  # a bad config fails before the file is read
    ckpt_dir = Path(args.out) / "checkpoints"
    if ckpt_dir.is_dir() and latest_checkpoint(ckpt_dir) is not None:
        raise FileExistsError(f"{ckpt_dir} already holds checkpoints; convert into a new folder")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise FileNotFoundError(f"--data-root {args.data_root} is not a directory")
    start = time.perf_counter()
    path = convert_official(source, args.config, args.out, data_root=args.data_root)
    print(f"converted {source} ({time.perf_counter() - start:.1f} s) -> {path}")
    print(f"use it as: scoresde sample {ckpt_dir} --out samples.png")
    return 0


COMMANDS = {"convert-official": convert_official_command}
