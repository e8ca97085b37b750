import pytest
import torch

from scoresde.toy import demo_mixture

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def mixture():
    return demo_mixture()


@pytest.fixture(scope="session")
def reference(mixture):
    """200k true samples of the demo mixture (float64), for the mean-log-density comparison."""
    return mixture.sample(200_000, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
