"""Input makers shared by the slots' checks."""
import torch

# Row counts from FACTS/GPU MODE practice: odd sizes around powers of two catch bad masks.
ODD_ROWS = (1, 3, 127, 129)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def int4_codes(shape, seed, device):
    return torch.randint(-8, 8, shape, generator=generator(seed), dtype=torch.int8).to(device)


def noncontiguous(x):
    """The same values as x, as a non-contiguous view (a transpose of a transposed copy)."""
    return x.t().contiguous().t() if x.dim() == 2 and x.shape[0] > 1 and x.shape[1] > 1 else x
