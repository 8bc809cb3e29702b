"""Input makers shared by the slots' checks."""
import torch

# Row counts from GPU MODE practice (docs/facts.md): odd sizes near powers of two catch bad masks.
ODD_ROWS = (1, 3, 127, 129)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def int4_codes(shape, seed, device):
    return torch.randint(-8, 8, shape, generator=generator(seed), dtype=torch.int8).to(device)


def noncontiguous(x):
    """The same values as x, as a non-contiguous view (a transpose of a transposed copy)."""
    return x.t().contiguous().t() if x.dim() == 2 and x.shape[0] > 1 and x.shape[1] > 1 else x


def packed_pair_hint(got, expected, granularity, block_text, fp32_note=""):
    """The hint for a (packed, scales) output of the wrong structure, shared by the quantizers.

    block_text says what one "block" scale covers; fp32_note is appended to the dtype hint."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return "return a tuple (packed, scales): packed bytes (uint8) and the fp32 scales"
    p, s = got
    if isinstance(p, torch.Tensor) and p.dtype != torch.uint8:
        return "packed bytes are uint8, two codes per byte: torch.empty(..., K // 2, dtype=torch.uint8)"
    if isinstance(s, torch.Tensor) and s.dtype != torch.float32:
        return "scales are fp32 whatever the input dtype" + fp32_note
    if isinstance(s, torch.Tensor) and s.shape != expected[1].shape:
        want = {"row": "x.shape[:-1] + (1,): one per row, kept as a column",
                "block": block_text,
                "tensor": "() (a 0-dim tensor): one for the whole tensor"}[granularity]
        return f"with granularity {granularity!r} the scales have shape {want}"
    return None


def hint_swapped_nibbles(args, kwargs, expected, got):
    """For slots returning (packed codes, scales): the bytes are right but each byte's nibbles are
    swapped."""
    if (isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[0], torch.Tensor)
            and got[0].shape == expected[0].shape and got[0].dtype == torch.uint8):
        p, e = got[0].cpu(), expected[0].cpu()
        if not torch.equal(p, e) and torch.equal(((p & 0x0F) << 4) | (p >> 4), e):
            return "the two nibbles are swapped: code 2j goes in the LOW nibble, code 2j+1 in the HIGH one"
    return None
