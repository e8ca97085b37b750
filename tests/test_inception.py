"""FID Inception-v3: architecture (state-dict entries, parameter count), FID block quirks, strict local loading,
.pth/.safetensors round trips, input checks and batching. Random weights only: nothing is downloaded."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from scoresde.checkpoint import CheckpointError
from scoresde.inception import (
    WEIGHTS_FILE_NAME,
    BasicConv2d,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE,
    FIDInceptionV3,
    InceptionV3Features,
    inception_features,
)

# A few entries of pt_inception-2015-12-05-6726825d.pth with their shapes, written out from the published
# architecture (Szegedy et al. 2015, Table 1 / torchvision's module names) rather than read off the module.
EXPECTED_ENTRIES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.weight": (32,),
    "Conv2d_1a_3x3.bn.bias": (32,),
    "Conv2d_1a_3x3.bn.running_mean": (32,),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_2a_3x3.conv.weight": (32, 32, 3, 3),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5c.branch_pool.conv.weight": (64, 256, 1, 1),
    "Mixed_5d.branch3x3dbl_3.conv.weight": (96, 96, 3, 3),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6c.branch7x7dbl_2.conv.weight": (160, 160, 7, 1),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_6e.branch_pool.bn.running_var": (192,),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch3x3dbl_3a.conv.weight": (384, 384, 1, 3),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.running_mean": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}

# BasicConv2d layers per block: 5 stem convs, A 7 (x3), B 4, C 10 (x4), D 6, E 9 (x2) = 94; each has 5 entries.
CONVS_PER_TOP = {"Conv2d_1a_3x3": 1, "Conv2d_2a_3x3": 1, "Conv2d_2b_3x3": 1, "Conv2d_3b_1x1": 1, "Conv2d_4a_3x3": 1,
                 "Mixed_5b": 7, "Mixed_5c": 7, "Mixed_5d": 7, "Mixed_6a": 4, "Mixed_6b": 10, "Mixed_6c": 10,
                 "Mixed_6d": 10, "Mixed_6e": 10, "Mixed_7a": 6, "Mixed_7b": 9, "Mixed_7c": 9}  # fmt: skip

# Published parameter counts of Inception-v3 (conv weights, batch-norm affine terms, classifier):
# * torchvision docs, Inception_V3_Weights.IMAGENET1K_V1 "num_params": 27,161,264. That model also has the
#   auxiliary head (BasicConv2d(768, 128, 1x1) + BasicConv2d(128, 768, 5x5) + Linear(768, 1000)) and a
#   1000-way fc; the FID network has neither the head nor that fc but a 1008-way fc.
# * Keras Applications table / model.summary() of InceptionV3: 23,851,784 in total, 23,817,352 trainable,
#   34,432 non-trainable. Keras batch norms have no scale (gamma): trainable = convs + beta + Linear(2048, 1000),
#   non-trainable = moving mean + variance = 2 x (number of batch-norm channels).
TORCHVISION_PARAMS = 27_161_264
AUX_HEAD_PARAMS = (768 * 128 + 2 * 128) + (128 * 768 * 5 * 5 + 2 * 768) + (768 * 1000 + 1000)
FC_1000, FC_1008 = 2048 * 1000 + 1000, 2048 * 1008 + 1008
KERAS_TRAINABLE, KERAS_NON_TRAINABLE = 23_817_352, 34_432
BN_CHANNELS = KERAS_NON_TRAINABLE // 2  # 17,216
FID_INCEPTION_PARAMS = TORCHVISION_PARAMS - AUX_HEAD_PARAMS - FC_1000 + FC_1008  # 23,850,960

pytestmark = pytest.mark.usefixtures("one_thread")


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the FID Inception entries, scaled so that activations stay O(1) through the network."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, ref in FIDInceptionV3().state_dict().items():
        if key.endswith("conv.weight"):
            value = torch.randn(ref.shape, generator=gen) * (2.0 / ref[0].numel()) ** 0.5
        elif key.endswith(("bn.weight", "running_var")):
            value = 0.5 + torch.rand(ref.shape, generator=gen)
        elif key.startswith("fc."):
            value = 0.01 * torch.randn(ref.shape, generator=gen)
        else:  # bn.bias, running_mean
            value = 0.1 * torch.randn(ref.shape, generator=gen)
        state[key] = value
    return state


@pytest.fixture(scope="module")
def state():
    return random_state()


@pytest.fixture(scope="module")
def weight_files(state, tmp_path_factory):
    root = tmp_path_factory.mktemp("inception")
    pth, st = root / WEIGHTS_FILE_NAME, root / "inception.safetensors"
    torch.save(dict(state), pth)
    save_file(state, str(st))
    return pth, st


@pytest.fixture(scope="module")
def model(weight_files):
    return InceptionV3Features(weight_files[0])


def test_state_dict_entries_and_parameter_count():
    net = FIDInceptionV3()
    entries = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    for key, shape in EXPECTED_ENTRIES.items():
        assert entries.get(key) == shape, key
    assert not [k for k in entries if "AuxLogits" in k or "num_batches_tracked" in k]
    top = {}
    for key in entries:
        top[key.split(".")[0]] = top.get(key.split(".")[0], 0) + 1
    assert top == {**{k: 5 * n for k, n in CONVS_PER_TOP.items()}, "fc": 2}
    assert len(entries) == 5 * 94 + 2
    for key in entries:  # every conv is bias-free and followed by a batch norm with the four TF entries
        assert key in ("fc.weight", "fc.bias") or key.split(".")[-2] in ("conv", "bn"), key
        assert not key.endswith("conv.bias"), key

    assert FID_INCEPTION_PARAMS == 23_850_960
    assert KERAS_TRAINABLE + BN_CHANNELS - FC_1000 + FC_1008 == FID_INCEPTION_PARAMS  # the two sources agree
    assert sum(p.numel() for p in net.parameters()) == FID_INCEPTION_PARAMS
    assert sum(b.numel() for k, b in net.named_buffers() if k.endswith("running_mean")) == BN_CHANNELS
    assert net.num_features == 2048 and InceptionV3Features.num_features == 2048
    assert {m.eps for m in net.modules() if type(m).__name__ == "FrozenBatchNorm2d"} == {1e-3}


def _valid_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 mean over the pixels inside the image only (TF 'SAME' average pooling)."""
    c = x.shape[1]
    total = F.conv2d(x, torch.ones(c, 1, 3, 3), padding=1, groups=c)
    count = F.conv2d(torch.ones(1, 1, *x.shape[2:]), torch.ones(1, 1, 3, 3), padding=1)
    return total / count


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    return padded.unfold(2, 3, 1).unfold(3, 3, 1).amax(dim=(-1, -2))


@pytest.mark.parametrize(
    ("block", "pool_width", "pool"),
    [(FIDInceptionA(4, pool_features=3), 3, _valid_avg_pool), (FIDInceptionC(4, c7=3), 192, _valid_avg_pool),
     (FIDInceptionE(4, pool="avg"), 192, _valid_avg_pool), (FIDInceptionE(4, pool="max"), 192, _max_pool)],
)  # fmt: skip
def test_fid_pooling_branches(block, pool_width, pool):
    """The FID variants: padding-free average pools (A, C, Mixed_7b) and a max pool in the last block (Mixed_7c)."""
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = block(x)[:, -pool_width:]
        want = block.branch_pool(pool(x))
        padded_avg = block.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, padded_avg)
    net = FIDInceptionV3()
    assert (net.Mixed_7b.pool, net.Mixed_7c.pool) == ("avg", "max")


def test_basic_conv_is_conv_bn_relu_with_tf_eps():
    layer = BasicConv2d(3, 4, 3, padding=1)
    gen = torch.Generator().manual_seed(2)
    for name in ("weight", "bias", "running_mean"):
        getattr(layer.bn, name).data.copy_(torch.randn(4, generator=gen))
    layer.bn.running_var.copy_(0.5 + torch.rand(4, generator=gen))
    x = torch.randn(2, 3, 6, 6, generator=gen)
    with torch.no_grad():
        z = F.conv2d(x, layer.conv.weight, padding=1)
        bn = layer.bn
        want = (z - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + 1e-3).sqrt()
        want = (want * bn.weight[:, None, None] + bn.bias[:, None, None]).clamp_min(0)
        torch.testing.assert_close(layer(x), want)
    assert layer.conv.bias is None


def test_round_trip_pth_and_safetensors(state, weight_files, model):
    from_st = InceptionV3Features(weight_files[1])
    for loaded in (model, from_st):
        own = loaded.state_dict()
        assert own.keys() == state.keys()
        assert all(torch.equal(own[k], state[k]) for k in state)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    reference = FIDInceptionV3().eval()
    reference.load_state_dict(state)
    gen = torch.Generator().manual_seed(3)
    for images in (torch.rand(2, 1, 8, 8, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)):
        feats = model(images)
        assert feats.shape == (2, 2048) and feats.dtype == torch.float32 and not feats.requires_grad
        assert torch.isfinite(feats).all() and feats.std() > 0 and not torch.allclose(feats[0], feats[1])
        assert torch.equal(feats, from_st(images))
        # pytorch-fid's preprocessing written out: bilinear to 299 (align_corners=False), grey -> RGB, to [-1, 1]
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1)
        with torch.no_grad():
            torch.testing.assert_close(feats, reference.pool3(2 * x - 1), rtol=1e-5, atol=1e-6)
        if images.shape[1] == 1:
            torch.testing.assert_close(feats, model(images.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-6)
    model.train()
    assert not model.training


def test_num_batches_tracked_entries_are_accepted(state, tmp_path):
    path = tmp_path / "with_counters.pth"
    counters = [k.replace("running_mean", "num_batches_tracked") for k in state if k.endswith("running_mean")]
    extra = {k: torch.tensor(7) for k in counters}
    torch.save({**state, **extra}, path)
    loaded = InceptionV3Features(path)
    assert torch.equal(loaded.fc.weight, state["fc.weight"])


@pytest.mark.parametrize(
    ("edit", "named"),
    [("missing", "Mixed_7c.branch_pool.conv.weight"), ("extra", "AuxLogits.fc.weight"), ("reshaped", "fc.weight")],
)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_wrong_file_names_the_entry(state, tmp_path, edit, named, suffix):
    bad = dict(state)
    if edit == "missing":
        del bad[named]
    elif edit == "extra":
        bad[named] = torch.zeros(1000, 768)
    else:
        bad[named] = torch.zeros(1000, 2048)
    path = tmp_path / f"bad{suffix}"
    if suffix == ".pth":
        torch.save(bad, path)
    else:
        save_file(bad, str(path))
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        InceptionV3Features(path)


def test_missing_file_and_unreadable_files(tmp_path):
    missing = tmp_path / "nowhere" / WEIGHTS_FILE_NAME
    with pytest.raises(FileNotFoundError) as info:
        InceptionV3Features(missing)
    message = str(info.value)
    assert str(missing) in message and WEIGHTS_FILE_NAME in message and "never downloads" in message
    assert "\n" not in message

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(CheckpointError, match="plain state dict"):
        InceptionV3Features(not_a_dict)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable"):
        InceptionV3Features(garbage)
    other = tmp_path / "weights.npz"
    other.write_bytes(b"")
    with pytest.raises(CheckpointError, match="must end in"):
        InceptionV3Features(other)


class _Payload:
    """Pickles to a call that would create a file if it ever ran at load time."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_pth_loading_runs_no_code(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2), "payload": _Payload(target)}, path)
    with pytest.raises(CheckpointError, match="unsafe"):
        InceptionV3Features(path)
    assert not target.exists()


@pytest.mark.parametrize(
    ("images", "match"),
    [(torch.rand(3, 8, 8), r"\[B, C, H, W\]"), (torch.rand(1, 2, 8, 8), "channels"),
     (torch.rand(1, 4, 8, 8), "channels"), (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating point"),
     (2 * torch.rand(1, 3, 8, 8) - 1, r"\[0, 1\]"), (255 * torch.rand(1, 3, 8, 8), "255"),
     (torch.full((1, 1, 8, 8), float("nan")), "NaN"), ([[0.5]], "torch.Tensor")],
)  # fmt: skip
def test_bad_images_are_refused(model, images, match):
    with pytest.raises(ValueError, match=match):
        model(images)
    with pytest.raises(ValueError, match=match):
        inception_features(images, model)


def test_inception_features_is_batch_size_independent(model, weight_files):
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    whole = inception_features(images, model, batch_size=64)
    assert whole.shape == (5, 2048) and whole.dtype == torch.float64 and whole.device.type == "cpu"
    torch.testing.assert_close(inception_features(images, model, batch_size=3), whole, rtol=1e-5, atol=1e-5)
    from_path = inception_features(images[:2], weight_files[1], batch_size=1)  # loads the .safetensors copy
    torch.testing.assert_close(from_path, whole[:2], rtol=1e-5, atol=1e-5)
    assert inception_features(images[:0], model).shape == (0, 2048)
    with pytest.raises(ValueError, match="batch_size"):
        inception_features(images, model, batch_size=0)
