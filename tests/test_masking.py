"""Atypicality, the hysteresis mask, the masked posterior and used-latent estimation."""

import torch

from vase_rl.masking import apply_mask, atypicality, estimate_used_latents, hysteresis_mask


def test_atypicality_of_standard_normal_is_near_zero_and_shifted_is_large():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 3, generator=g)
    assert torch.all(atypicality(z) < 0.01)
    shifted = z + torch.tensor([2.0, 0.0, 0.0])
    scaled = z * torch.tensor([1.0, 3.0, 0.2])
    a_shift, a_scale = atypicality(shifted), atypicality(scaled)
    # hand values: 0.5 * m^2 = 2 ; 0.5 * (9 - 1 - ln 9) ; 0.5 * (0.04 - 1 - ln 0.04)
    assert abs(a_shift[0].item() - 2.0) < 0.1
    assert abs(a_scale[1].item() - 0.5 * (9 - 1 - torch.log(torch.tensor(9.0)).item())) < 0.2
    assert abs(a_scale[2].item() - 0.5 * (0.04 - 1 - torch.log(torch.tensor(0.04)).item())) < 0.1


def test_hysteresis_keeps_state_between_thresholds():
    alpha = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.9])
    prev = torch.tensor([False, True, False, True, False])
    out = hysteresis_mask(alpha, prev, low=0.48, high=0.72)
    assert out.tolist() == [True, True, False, False, False]


def test_masked_latents_are_replaced_by_prior_noise():
    z = torch.full((4, 3), 5.0)
    noise = torch.randn(4, 3)
    mask = torch.tensor([True, False, True])
    out = apply_mask(z, mask, noise)
    assert torch.all(out[:, 0] == 5.0) and torch.all(out[:, 2] == 5.0)
    assert torch.equal(out[:, 1], noise[:, 1])
    assert torch.all(apply_mask(z, mask, None)[:, 1] == 0)


def test_used_latent_estimation_flags_an_ignored_latent():
    torch.manual_seed(0)
    n_latent = 4
    weights = torch.randn(n_latent, 20) * 3
    weights[2] = 0.0  # latent 2 provably ignored by this decoder

    def decode(z):
        return z @ weights

    z = torch.randn(64, n_latent)
    target = torch.sigmoid(decode(z))

    def nll(zz):
        return torch.nn.functional.binary_cross_entropy_with_logits(decode(zz), target, reduction="none").sum(1)

    used, sigma = estimate_used_latents(
        nll, z, steps=60, lr=0.1, threshold=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert used.tolist() == [True, True, False, True]
    assert sigma[2] > 5 * sigma[[0, 1, 3]].max()


def test_curvature_of_a_linear_gaussian_decoder_is_exact_and_flags_ignored_latents():
    from vase_rl.masking import nll_curvature, tolerated_noise_curvature

    weights = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])  # latent 1 ignored

    def decode(z):
        return z @ weights

    z = torch.randn(16, 3)
    # Gaussian likelihood, std 0.5: H_n = sum_j W_nj^2 / 0.25, the same for every image
    torch.testing.assert_close(nll_curvature(decode, z, "gaussian", 0.5), torch.tensor([20.0, 0.0, 3.0]))
    used, sigma = tolerated_noise_curvature(decode, z, "gaussian", 0.5, threshold=1.0)
    assert used.tolist() == [True, False, True] and torch.isinf(sigma[1]) or sigma[1] > 1e5
    # the noise-tolerance objective E[NLL(z + eps)] - sum log sigma is minimised at sigma = H^-1/2:
    # for this quadratic NLL, the expected increase is sum_n sigma_n^2 H_n / 2 exactly
    torch.testing.assert_close(sigma[[0, 2]], torch.tensor([20.0, 3.0]).rsqrt())


def test_curvature_of_a_bernoulli_decoder_uses_the_fisher_weight():
    from vase_rl.masking import nll_curvature

    weights = torch.tensor([[2.0, -1.0]])

    def decode(z):
        return z @ weights

    z = torch.zeros(4, 1)  # logits 0: p = 1/2, Fisher weight 1/4 per pixel
    torch.testing.assert_close(nll_curvature(decode, z, "bernoulli"), torch.tensor([0.25 * (4.0 + 1.0)]))
