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


def sharp_toy_model(seed: int = 0, size: str = "tiny", scale: float = 8.0):
    """A random toy model whose next-token distributions are far from uniform (scaled tied embedding),
    so that sampling tests see real differences between models."""
    from alignment import toy

    model = toy.build_model(toy.build_tokenizer(), size, seed=seed).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
    return model
