"""The operators against hand-written tensor arithmetic (the paper's official formulas)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptermath.algebra.lowrank import lowrank_frobenius_norm, lowrank_inner, lowrank_relative_difference, lowrank_svd
from adaptermath.algebra.operators import combine_heads, delta_space_lora, ia3_combine, param_space_lora
from adaptermath.errors import CompositionError
from adaptermath.modules import Ia3Module, LoraModule


def lora_module(seed: int, r: int = 3, out: int = 6, inp: int = 5, scaling: float = 2.0) -> LoraModule:
    g = torch.Generator().manual_seed(seed)
    return LoraModule("m", torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g), scaling)


def test_param_negation_flips_b_by_default():
    x = lora_module(0)
    A, B = param_space_lora([(-1.0, x)], scaling=x.scaling)
    assert torch.equal(A, x.A) and torch.equal(B, -x.B)  # ⊖{A, B} = {A, −B}
    A, B = param_space_lora([(-1.0, x)], scaling=x.scaling, negate_factor="A")
    assert torch.equal(A, -x.A) and torch.equal(B, x.B)


def test_param_analogy_matches_official_formula():
    cls, tgt, src = lora_module(1), lora_module(2), lora_module(3)
    c0, c1 = 0.86, 0.14
    A, B = param_space_lora([(c0, cls), (c1, tgt), (-c1, src)], scaling=2.0)
    torch.testing.assert_close(A, c0 * cls.A + c1 * tgt.A + c1 * src.A)
    torch.testing.assert_close(B, c0 * cls.B + c1 * tgt.B - c1 * src.B)


def test_param_alpaca_detox_matches_official_formula():
    alpaca, toxic = lora_module(4), lora_module(5)
    lam = 0.4
    A, B = param_space_lora([(1 + lam, alpaca), (-lam, toxic)], scaling=2.0, negate_factor="A")
    torch.testing.assert_close(A, (1 + lam) * alpaca.A - lam * toxic.A)
    torch.testing.assert_close(B, (1 + lam) * alpaca.B + lam * toxic.B)


def test_param_addition_folds_different_scalings_into_b():
    x, y = lora_module(6, scaling=2.0), lora_module(7, scaling=0.5)
    A, B = param_space_lora([(0.5, x), (0.5, y)], scaling=2.0)
    torch.testing.assert_close(B, 0.5 * x.B + 0.5 * (0.5 / 2.0) * y.B)
    torch.testing.assert_close(A, 0.5 * x.A + 0.5 * y.A)


def test_param_space_refuses_different_ranks():
    with pytest.raises(CompositionError, match="--space delta"):
        param_space_lora([(1.0, lora_module(0, r=2)), (1.0, lora_module(1, r=3))], scaling=1.0)


def test_ia3_operators_act_on_deviation_from_one():
    g = torch.Generator().manual_seed(0)
    l1 = Ia3Module("m", 1 + 0.3 * torch.randn(7, generator=g), False)
    l2 = Ia3Module("m", 1 + 0.3 * torch.randn(7, generator=g), False)
    torch.testing.assert_close(ia3_combine([(-1.0, l1)]), 2 - l1.l)  # negation: 2 − l
    lam = 0.6
    torch.testing.assert_close(ia3_combine([(-lam, l1)]), (1 + lam) - lam * l1.l)
    torch.testing.assert_close(ia3_combine([(0.3, l1), (0.7, l2)]), 1 + 0.3 * (l1.l - 1) + 0.7 * (l2.l - 1))


def test_delta_space_is_exact_weighted_sum_of_updates():
    x, y = lora_module(8, r=2), lora_module(9, r=4, scaling=0.25)
    A, B = delta_space_lora([(0.7, x), (-1.3, y)])
    assert A.shape == (6, 5) and B.shape == (6, 6)
    torch.testing.assert_close(B @ A, 0.7 * x.scaling * x.B @ x.A - 1.3 * y.scaling * y.B @ y.A)


def test_heads_are_normalised_by_sum_of_absolute_coefficients():
    w1, w2 = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(combine_heads([(0.3, w1), (-0.9, w2)]), (0.3 * w1 - 0.9 * w2) / 1.2)


def test_lowrank_norms_and_inner_products_match_dense():
    P1, Q1, P2, Q2 = torch.randn(9, 3), torch.randn(3, 7), torch.randn(9, 2), torch.randn(2, 7)
    assert lowrank_frobenius_norm(P1, Q1) == pytest.approx(float((P1 @ Q1).norm()), rel=1e-5)
    assert lowrank_inner(P1, Q1, P2, Q2) == pytest.approx(float(((P1 @ Q1) * (P2 @ Q2)).sum()), rel=1e-5)
    dense = float((P1 @ Q1 - P2 @ Q2).norm() / (P2 @ Q2).norm())
    assert lowrank_relative_difference(P1, Q1, P2, Q2) == pytest.approx(dense, rel=1e-5)


def test_lowrank_svd_matches_dense_svd_and_eckart_young():
    P, Q = torch.randn(40, 6), torch.randn(6, 30)
    dense = P @ Q
    svd = lowrank_svd(P, Q)
    reference = torch.linalg.svdvals(dense.double())
    torch.testing.assert_close(svd.S.double(), reference[:6], rtol=1e-4, atol=1e-4)
    for k in (1, 3, 6):
        B, A = svd.factors(k)
        error = float((B @ A - dense).norm() / dense.norm())
        assert error == pytest.approx(svd.relative_error(k), abs=1e-4)
        expected = float(torch.sqrt((reference[k:] ** 2).sum() / (reference ** 2).sum()))
        assert svd.relative_error(k) == pytest.approx(expected, abs=1e-5)
    assert svd.relative_error(6) == pytest.approx(0.0, abs=1e-6)
    assert svd.rank_for_energy(1.0) <= 6
    energy_k = svd.rank_for_energy(0.9)
    assert 1 - svd.relative_error(energy_k) ** 2 >= 0.9 - 1e-9
    assert energy_k == 1 or 1 - svd.relative_error(energy_k - 1) ** 2 < 0.9


# --------------------------------------------------------------------------- algebraic laws

coefficient = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_double_negation_is_identity_in_param_space(seed):
    x = lora_module(seed)
    A1, B1 = param_space_lora([(-1.0, x)], scaling=x.scaling)
    A2, B2 = param_space_lora([(-1.0, LoraModule("m", A1, B1, x.scaling))], scaling=x.scaling)
    assert torch.equal(A2, x.A) and torch.equal(B2, x.B)
    l = Ia3Module("m", 1 + 0.2 * x.A.reshape(-1), True)
    once = ia3_combine([(-1.0, l)])
    torch.testing.assert_close(ia3_combine([(-1.0, Ia3Module("m", once, True))]), l.l)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_x_minus_x_is_zero_in_delta_space(seed):
    x = lora_module(seed)
    A, B = delta_space_lora([(1.0, x), (-1.0, x)])
    assert float((B @ A).abs().max()) <= 1e-5 * float(x.delta().abs().max() + 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), coefficient, coefficient)
def test_delta_space_is_linear(seed, a, b):
    x, y = lora_module(seed), lora_module(seed + 1, r=2)
    A, B = delta_space_lora([(a, x), (b, y)])
    torch.testing.assert_close(B @ A, a * x.delta() + b * y.delta(), rtol=1e-4, atol=1e-4)
