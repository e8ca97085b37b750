import os

import pytest
import torch

from scoresde.toy import demo_mixture

# two torch threads in a plain run; one per worker when pytest-xdist runs the files on two workers (two processes
# with two threads each on two cores slow each other down many times over)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def mixture():
    return demo_mixture()


@pytest.fixture(scope="session")
def reference(mixture):
    """200k true samples of the demo mixture (float64), for the mean-log-density comparison."""
    return mixture.sample(200_000, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of many small tensor ops: on a busy machine every parallel region of a
    two-thread pool can wait a scheduler slice for its second thread. The thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
