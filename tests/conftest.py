"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # Two cores shared with Stockfish processes: torch's default thread pool oversubscribes them
    # (a small conv ran 8x slower under contention), so tests run torch on one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
