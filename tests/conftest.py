import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
