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


# Longest files first (timings from `pytest --durations`): with one file per worker at a time
# (`--dist loadfile`), starting the long ones early keeps both workers busy to the end.
_LONG_FILES = ("test_tutorial_09.py", "test_sampling_umbrella.py", "test_reweight.py", "test_multistate_marcus.py",
               "test_pipeline.py", "test_pipeline_quantum.py", "test_readme.py", "test_quantum_estimators.py",
               "test_cross_level.py", "test_sampling_resume.py", "test_docs.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(_LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
