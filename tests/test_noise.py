"""Per-sample noise streams: the cipher's known answers, the distribution, and batch independence."""

import pytest
import torch
from scipy import stats

import scoresde as sd
from scoresde.noise import SampleNoise, philox4x32
from scoresde.toy import demo_mixture

# Random123's published known-answer vectors for Philox4x32-10 (counter, key, output)
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]  # fmt: skip


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    words = [torch.full((37,), c, dtype=torch.int64) for c in counter]  # 37: vectorised body and scalar tail
    out = philox4x32(words, key)
    for word, value in zip(out, expected, strict=True):
        assert bool((word == value).all())


def test_normals_and_uniforms_have_the_right_distribution():
    noise = SampleNoise(123, 400)
    z = noise.randn((400, 250), dtype=torch.float64).flatten().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    u = noise.rand((400, 250), dtype=torch.float64).flatten().numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert u.min() > 0.0 and u.max() < 1.0


def test_streams_draws_and_positions_are_uncorrelated():
    noise = SampleNoise(5, 2000)
    a, b = noise.randn((2000, 8), dtype=torch.float64), noise.randn((2000, 8), dtype=torch.float64)
    limit = 4.0 / (2000 * 8) ** 0.5  # 4 standard errors of a correlation
    assert abs(float((a * b).mean())) < limit  # consecutive draws
    assert abs(float((a[:-1] * a[1:]).mean())) < limit * 1.01  # neighbouring samples
    assert abs(float((a[:, :-1] * a[:, 1:]).mean())) < limit * 1.1  # neighbouring positions
    other = SampleNoise(6, 2000).randn((2000, 8), dtype=torch.float64)
    assert abs(float((a * other).mean())) < limit  # another seed


def test_a_sample_stream_does_not_depend_on_its_batch():
    whole = SampleNoise(9, range(100))
    draws = [whole.randn((100, 3, 2)) for _ in range(3)]
    part = SampleNoise(9, [70, 3])
    for draw in draws:
        assert torch.equal(part.randn((2, 3, 2)), draw[[70, 3]])
    sub = SampleNoise(9, range(100)).subset(50, 60)
    assert torch.equal(sub.randn((10, 3, 2)), draws[0][50:60])
    assert not torch.equal(draws[0], draws[1])


def test_bad_use_is_a_clear_error():
    with pytest.raises(ValueError, match="seed"):
        SampleNoise(-1, 4)
    with pytest.raises(ValueError, match="streams"):
        SampleNoise(0, 4).randn((5, 2))
    with pytest.raises(ValueError, match="streams"):
        sd.sample(sd.VPSDE(), demo_mixture().score_fn(sd.VPSDE()), (5, 2), generator=SampleNoise(0, 4))
    with pytest.raises(TypeError, match="generator"):
        sd.sample(sd.VPSDE(), demo_mixture().score_fn(sd.VPSDE()), (5, 2), generator=0)


FIXED = [
    ("euler_maruyama", {}),
    ("reverse_diffusion", {}),
    ("ancestral", {}),
    ("pc", {"predictor": "euler_maruyama", "corrector": "ald"}),
    ("ddim", {"eta": 1.0}),
    ("ode", {"method": "heun"}),
]


@pytest.mark.parametrize("sampler, options", FIXED)
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE(sigma_max=10.0)], ids=["vp", "ve"])
def test_samples_do_not_depend_on_batching(sampler, options, sde):
    score = demo_mixture().score_fn(sde)

    def draw(indices, **kw):
        n = len(indices)
        return sd.sample(sde, score, (n, 2), sampler=sampler, steps=30, generator=SampleNoise(11, indices),
                         **options, **kw)  # fmt: skip

    one = draw(range(200))
    assert torch.equal(draw(range(200), batch_size=64), one)  # four batches of a single call
    assert torch.equal(draw(range(120, 200)), one[120:])  # another process's shard
    assert not torch.equal(sd.sample(sde, score, (200, 2), sampler=sampler, steps=30, generator=SampleNoise(12, 200),
                                     **options), one)  # fmt: skip


def test_adaptive_ode_samples_match_across_batches_to_rounding():
    sde = sd.VPSDE()
    score = demo_mixture().score_fn(sde)
    one = sd.sample(sde, score, (150, 2), sampler="ode", generator=SampleNoise(3, 150))
    shard = sd.sample(sde, score, (50, 2), sampler="ode", generator=SampleNoise(3, range(100, 150)))
    torch.testing.assert_close(shard, one[100:], rtol=1e-4, atol=1e-4)


def test_batched_sampling_with_a_torch_generator_is_reproducible():
    sde = sd.VPSDE()
    score = demo_mixture().score_fn(sde)
    a, nfe = sd.sample(sde, score, (90, 2), sampler="euler_maruyama", steps=20, batch_size=40,
                       generator=torch.Generator().manual_seed(0), return_nfe=True)  # fmt: skip
    b = sd.sample(sde, score, (90, 2), sampler="euler_maruyama", steps=20, batch_size=40,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(a, b) and a.shape == (90, 2) and nfe == 21
