import os

import pytest
import torch

# Tests are seeded and run in float64; one thread keeps timings and results stable on the 2-core CI.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
