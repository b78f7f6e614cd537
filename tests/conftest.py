import os

import pytest
import torch

# Tests are seeded and run in float64; one thread keeps timings and results stable on the 2-core CI.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): each keeps its in-process OpenMP/BLAS
    # calls on one thread too, so the two workers never oversubscribe the 2-core CI. Pools and notebook
    # kernels that the tests start decide their own threads (fesurf.execution).
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
