import pytest
import torch


@pytest.fixture(scope="module")
def torch_single_thread():
    """The bandit tests use tiny tensors: intra-op threads only add overhead, and they stall badly
    (milliseconds per op) when the machine's cores are busy with other work. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
