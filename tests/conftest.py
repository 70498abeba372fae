"""Test-wide settings."""

import torch

# The tests work on tiny matrices, for which one thread is fastest; it also keeps their timing
# steady when CI shares the machine's two cores.
torch.set_num_threads(1)
