"""Parameter counts and FLOPs against hand-computed values for known shapes."""

import pytest

from harness.core import flops
from harness.core.flops import Shape

GPT2_SMALL = Shape(n_layer=12, d_model=768, n_head=12, vocab_size=50257, seq_len=1024)


def test_gpt2_small_parameter_counts():
    # Per block: qkv 768*2304+2304, proj 768*768+768, fc 768*3072+3072, proj 3072*768+768, 2 LN 4*768.
    per_block = (768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 4 * 768
    assert per_block == 7_087_872
    assert flops.params_nonembedding(GPT2_SMALL) == 12 * 7_087_872 + 2 * 768 == 85_056_000
    assert flops.params_embedding(GPT2_SMALL) == 50257 * 768 + 1024 * 768
    # The published GPT-2 small count (HF GPT2LMHeadModel, tied head).
    assert flops.params_total(GPT2_SMALL) == 124_439_808


def test_flops_per_token_palm_convention():
    expected = 6 * 85_056_000 + 6 * 768 * 50257 + 12 * 12 * 768 * 1024
    assert flops.flops_per_token(GPT2_SMALL) == expected


def test_gpt3_175b_is_175b():
    s = Shape(n_layer=96, d_model=12288, n_head=96, vocab_size=50257, seq_len=2048)
    assert 174e9 < flops.params_total(s) < 176e9


def test_model_counts_match_torch_module():
    torch = pytest.importorskip("torch")
    from harness.worker.model import GPT

    for s in (Shape(2, 64, 2, 256, 64), Shape(3, 96, 3, 300, 32), Shape(1, 32, 4, 256, 16, mlp_ratio=2)):
        torch.manual_seed(0)
        model = GPT(s)
        assert model.num_params() == flops.params_total(s)
        emb = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
        assert model.num_params() - emb == flops.params_nonembedding(s)


def test_mfu_and_scaling_efficiency():
    s = Shape(2, 64, 2, 256, 64)
    assert flops.mfu(1000.0, s, 2, flops.flops_per_token(s) * 1000.0) == pytest.approx(0.5)
    assert flops.scaling_efficiency(1800.0, 2, 1000.0, 1) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="peak"):
        flops.mfu(1.0, s, 1, 0.0)
