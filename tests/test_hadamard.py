"""The Hadamard quantizer: the matrix, the block rotation, and why it beats per-tensor RTN."""
import math

import pytest
import torch

from int4lab.spec.hadamard import (
    block_hadamard,
    hadamard_matrix,
    hadamard_quantize_spec,
    hq_fake_quantize,
    hq_matmul,
    quantization_error,
    search_block_size,
)
from int4lab.spec.quantizers import dequantize, quantize, quantize_int4_spec


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def outlier_input(n=128, d=256, channels=(3, 100), size=50.0, seed=0):
    """Activations with a few outlier channels, `size` times the rest, a random sign per token."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    signs = torch.randint(0, 2, (n, len(channels)), generator=g) * 2 - 1
    x[:, list(channels)] = size * signs * (1 + 0.1 * torch.randn(n, len(channels), generator=g))
    return x


@pytest.mark.parametrize("n", [1, 2, 4, 32, 128])
def test_hadamard_matrix_is_orthonormal_and_symmetric(n):
    H = hadamard_matrix(n, dtype=torch.float64)
    torch.testing.assert_close(H @ H.T, torch.eye(n, dtype=torch.float64))
    torch.testing.assert_close(H, H.T)
    torch.testing.assert_close(H.abs(), torch.full((n, n), 1 / math.sqrt(n), dtype=torch.float64))


def test_hadamard_matrix_sylvester_recursion_and_errors():
    H2 = hadamard_matrix(2)
    torch.testing.assert_close(H2, torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2))
    H4 = hadamard_matrix(4)
    torch.testing.assert_close(H4, torch.cat([torch.cat([H2, H2], 1), torch.cat([H2, -H2], 1)]) / math.sqrt(2))
    for bad in (0, 3, 12, -4):
        with pytest.raises(ValueError, match="power of two"):
            hadamard_matrix(bad)
    with pytest.raises(TypeError):
        hadamard_matrix(4.0)


def test_block_hadamard_is_block_diagonal_and_an_involution():
    x = randn(3, 5, 64)
    y = block_hadamard(x, 16)
    bd = torch.block_diag(*[hadamard_matrix(16)] * 4)
    torch.testing.assert_close(y, x @ bd, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block_hadamard(y, 16), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.linalg.vector_norm(y), torch.linalg.vector_norm(x))
    torch.testing.assert_close(block_hadamard(x, 1), x)
    assert block_hadamard(x.half(), 16).dtype == torch.float16


def test_block_hadamard_errors():
    with pytest.raises(ValueError, match="multiple"):
        block_hadamard(randn(4, 48), 32)
    with pytest.raises(ValueError, match="power of two"):
        block_hadamard(randn(4, 48), 24)
    with pytest.raises(TypeError, match="dtype"):
        block_hadamard(torch.ones(4, 32, dtype=torch.int32), 32)


def test_hadamard_quantize_spec_is_rotate_then_quantize():
    x = randn(6, 64)
    for gran in ("row", "tensor"):
        p, s = hadamard_quantize_spec(x, 32, granularity=gran)
        p2, s2 = quantize_int4_spec(block_hadamard(x, 32), granularity=gran)
        assert torch.equal(p, p2) and torch.equal(s, s2)
    p, s = hadamard_quantize_spec(x, 32, granularity="tensor", scale=0.1)
    assert s.item() == pytest.approx(0.1)


def test_hq_keeps_the_channels_per_tensor_rtn_zeroes():
    """Per-tensor RTN: the outliers set the step, every other channel rounds to 0 (error 100%)."""
    x = outlier_input()
    normal = torch.ones(x.shape[1], dtype=torch.bool)
    normal[[3, 100]] = False
    rtn = dequantize(*quantize(x, granularity="tensor"))
    hq = hq_fake_quantize(x, 32)

    def err_normal(xq):
        diff = (xq - x)[:, normal]
        return (torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(x[:, normal])).item()

    assert (rtn[:, normal] == 0).all() and err_normal(rtn) == pytest.approx(1.0)
    assert err_normal(hq) < 0.7
    # and on the whole tensor, and on the GEMM output, HQ is better too
    assert quantization_error(x, 32) < 0.75 * quantization_error(x, 1)
    w = randn(64, 256, seed=1) / 16
    y = x @ w.T
    e_hq = torch.linalg.vector_norm(hq_matmul(x, w, 32) - y) / torch.linalg.vector_norm(y)
    e_rtn = torch.linalg.vector_norm(hq_matmul(x, w, 1) - y) / torch.linalg.vector_norm(y)
    print(f"output rel. error: HQ(32) {e_hq:.3f}, per-tensor RTN {e_rtn:.3f}")
    assert e_hq < 0.85 * e_rtn


def test_hq_matmul_is_the_integer_product_of_the_rotations():
    x, w = randn(8, 64), randn(4, 64, seed=1)
    qx, sx = quantize(block_hadamard(x, 32), granularity="tensor")
    qw, sw = quantize(block_hadamard(w, 32), granularity="tensor")
    ref = (qx.long() @ qw.long().T).float() * sx * sw
    torch.testing.assert_close(hq_matmul(x, w, 32), ref)
    with pytest.raises(ValueError, match="same D"):
        hq_matmul(x, randn(4, 32), 32)


def test_quantization_error_block_one_is_plain_rtn():
    x = randn(16, 64)
    rtn = dequantize(*quantize(x, granularity="tensor"))
    assert quantization_error(x, 1) == pytest.approx(torch.linalg.vector_norm(rtn - x).item(), rel=1e-5)


def test_search_block_size_returns_the_argmin():
    x, w = outlier_input(n=64, d=128, channels=(5,)), randn(32, 128, seed=2)
    best, errors = search_block_size(x, w)
    assert sorted(errors) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert errors[best] == min(errors.values())
    assert best > 1 and errors[best] < errors[1]
    best2, errors2 = search_block_size(x, w, candidates=(1, 32))
    assert set(errors2) == {1, 32} and errors2[32] == pytest.approx(errors[32])
    with pytest.raises(ValueError, match="last dim"):
        search_block_size(x, w[:, :64])
