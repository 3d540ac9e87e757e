import contextlib

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


@contextlib.contextmanager
def interrupted_exit():
    """An entry point stopped by Ctrl-C (KeyboardInterrupt) exits 130 after its cleanup, with one line."""
    with pytest.raises(SystemExit) as e:
        yield
    assert e.value.code == 130, e.value.code


def sharp_toy_model(seed: int = 0, size: str = "tiny", scale: float = 8.0):
    """A random toy model whose next-token distributions are far from uniform (scaled tied embedding),
    so that sampling tests see real differences between models."""
    from alignment.core import toy

    model = toy.build_model(toy.build_tokenizer(), size, seed=seed).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
    return model


# A pipeline recipe small enough for tests: the tiny toy policy, the oracle reward, 12 prompts per iteration,
# 6-token responses (tests/test_alignment_pipeline.py, tests/test_paper_figures.py).
TINY_PIPELINE_RECIPE = """
policy: toy:tiny
reward: toy-oracle
prompts: toy:24
prompts_per_iteration: 12
eval_prompts: toy:16
generate: {num_responses: 4, max_new_tokens: 6, batch_size: 12, device: cpu}
annotate: {rule: max_min}
train: {lr: 0.01, epochs: EPOCHS, batch_size: 4, max_length: 64, device: cpu}
evaluate: {max_new_tokens: 6, batch_size: 16, device: cpu, export: none}
"""


def tiny_pipeline_recipe(epochs: int = 1, extra: str = "") -> str:
    return TINY_PIPELINE_RECIPE.replace("EPOCHS", str(epochs)) + extra
