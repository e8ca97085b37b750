"""The preset configs: ``scoresde configs`` lists them (and prints one), ``scoresde init-config`` writes a starter
config for a folder of your own images."""

from __future__ import annotations

from pathlib import Path

from .args import FORMATTER, positive_int

STARTER = """\
# A starter config for your own images (written by `scoresde init-config`): a VP score model, the digits main
# job's DDPM++ small network and recipe, on {size}x{size} images with {channels} channel(s) from
#   {root}
# Layout: {root}/train/ and {root}/test/ (each with images, or with one sub-folder of images per class), or one
# flat folder (then every 10th image, in path order, is held out as the test split).
# Train:  scoresde train {out} --workdir runs/mine    (a GPU is used when there is one)
# Then:   scoresde sample runs/mine --out samples.png, or in Python sd.sample(sd.load("runs/mine"), n=64)
[sde]
type = "vp"

[data]
dataset = "image_folder"
root = "{root}"
image_size = {size}
channels = {channels}
data_range = [-1.0, 1.0]
dequantize = true
flip = {flip}           # random horizontal flips: right for most photos, wrong for text or digits

[model]
arch = "ddpmpp_small"   # sized by image_size; model.net = {{ nf = 64 }} for a wider one
prediction = "eps"
time_input = "t"
time_scale = 999.0
net = {{ nf = 32 }}

[training]
n_iters = {iters}
batch_size = 64
lr = 1e-3
warmup = 200
grad_clip = 1.0
ema = 0.999
snapshot_every = 1000
log_every = 50
keep = 3

[sampling]
sampler = "dpm_solver++"  # 20 evaluations; "pc" with steps = 1000 is the paper's sampler
steps = 20
n = 64

[eval]
split = "test"
"""


def add_parsers(sub) -> None:
    """Add ``configs`` and ``init-config`` to the subparsers."""
    p = sub.add_parser("configs", help="list the preset configs (or print one)", formatter_class=FORMATTER,
                       description="The preset configs shipped with scoresde. `scoresde train NAME --workdir DIR` "
                                   "takes a preset by name; copy one (scoresde configs NAME > my.toml) to edit it.",
                       epilog="example:\n  scoresde configs\n  scoresde configs digits_vp > my.toml")  # fmt: skip
    p.add_argument("name", nargs="?", default=None, help="print this preset's TOML")
    init = sub.add_parser("init-config", help="write a starter config for a folder of your own images",
                          formatter_class=FORMATTER,
                          description="Write a commented starter config (VP, DDPM++ small, the main job's recipe) "
                                      "for an image folder, with its layout explained.",
                          epilog="example:\n  scoresde init-config --root data/flowers --image-size 16 --out "
                                 "flowers.toml\n  scoresde train flowers.toml --workdir runs/flowers")  # fmt: skip
    init.add_argument("--dataset", default="image_folder", choices=["image_folder"], help="the data's kind")
    init.add_argument("--root", required=True, metavar="DIR", help="the image folder")
    init.add_argument("--image-size", type=positive_int, required=True, help="side of the square images it trains on")
    init.add_argument("--channels", type=int, default=3, choices=[1, 3], help="3 (RGB, default) or 1 (grey)")
    init.add_argument("--iters", type=positive_int, default=5000, help="training steps (default 5000)")
    init.add_argument("--no-flip", action="store_true", help="no random horizontal flips (text, digits, faces...)")
    init.add_argument("--out", required=True, help="the config file to write (.toml; not overwritten)")


def configs_command(args) -> int:
    from ..config import PRESETS_DIR, config_path, presets

    if args.name is not None:
        path = config_path(args.name)
        if path.parent != PRESETS_DIR:
            raise ValueError(f"{args.name!r} is not a preset; presets: {', '.join(presets())}")
        print(path.read_text(), end="")
        return 0
    found = presets()
    width = max(map(len, found))
    print("preset configs (scoresde train NAME --workdir DIR; scoresde configs NAME prints one):")
    for name, about in found.items():
        print(f"  {name:<{width}}  {about}")
    return 0


def init_config_command(args) -> int:
    from ..config import from_dict, tomllib
    from ..plotting import check_output_file
    from ..validation import check_config

    out = Path(args.out)
    check_output_file(out, (".toml",), "--out")
    if out.exists():
        raise FileExistsError(f"{out} exists; pass another --out (init-config never overwrites a file)")
    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a directory")
    text = STARTER.format(root=root.resolve().as_posix(), size=args.image_size, channels=args.channels,
                          flip="false" if args.no_flip else "true", iters=args.iters, out=out.as_posix())  # fmt: skip
    check_config(from_dict(tomllib.loads(text)))  # what it writes builds (names, ranges, the folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}; train it with: scoresde train {out} --workdir runs/{out.stem}")
    return 0


COMMANDS = {"configs": configs_command, "init-config": init_config_command}
