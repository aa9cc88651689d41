"""hw_gan: model shapes and sizes, the three evaluation measures on hand-built and known
cases, the GAN task's update order, learning on a two-mode set, resume, bad input, and the
train / sample / evaluate commands end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hw_gan.metrics import gradient_magnitude, gradient_magnitude_ratio, loo_1nn_accuracy, two_sample_test
from hw_gan.models import Discriminator, Generator, check_image_size, count_parameters


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on a shared CPU: one intra-op thread is faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_generator_and_discriminator_shapes_at_each_size(size):
    torch.manual_seed(0)
    g, d = Generator(size, latent=16, width=8), Discriminator(size, width=8)
    images = g(torch.randn(3, 16))
    assert images.shape == (3, 3, size, size)
    with torch.no_grad():
        g.net[-2].weight *= 1000                       # huge pre-activations: Tanh saturates, never beyond
    saturated = g(torch.randn(3, 16))
    assert saturated.abs().max() <= 1.0 and saturated.abs().max() > 0.999
    assert d(images).shape == (3,)
    assert g(torch.randn(2, 16, 1, 1)).shape == (2, 3, size, size)   # the course's (N, latent, 1, 1)


def test_parameter_counts_are_the_courses_at_64_px():
    # bias-free 4x4 convolutions plus BatchNorm's scale and shift per channel
    d_convs = 16 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1)
    g_convs = 16 * (128 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 3)
    bn = 2 * (64 + 128 + 256 + 512)
    assert count_parameters(Discriminator(64, 64)) == d_convs + bn == 2_765_696    # the course's 2.77 M
    assert count_parameters(Generator(64, 128, 64)) == g_convs + bn == 3_806_080   # the course's 3.81 M


@pytest.mark.parametrize("size", [48, 100, 8, 512])
def test_image_sizes_that_are_not_powers_of_two_in_range_are_refused(size):
    with pytest.raises(ValueError, match=rf"--image-size {size}: must be a power of two from 16 to 256"):
        check_image_size(size)


# -- leave-one-out 1-NN ----------------------------------------------------------------------------
def test_loo_1nn_on_a_hand_built_case():
    real = np.array([[0.0], [0.4], [3.2]])
    fake = np.array([[1.0], [5.0], [5.5]])
    # nearest other point: 0 -> 0.4 (right), 0.4 -> 0 (right), 3.2 -> 5 (wrong),
    # 1 -> 0.4 (wrong), 5 -> 5.5 (right), 5.5 -> 5 (right): 4 of 6
    assert loo_1nn_accuracy(real, fake) == pytest.approx(4 / 6)


def test_loo_1nn_matches_sklearn_leave_one_out():
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    real, fake = rng.normal(0, 1, (30, 4)), rng.normal(1, 1, (30, 4))
    x, y = np.concatenate([real, fake]), np.r_[np.ones(30), np.zeros(30)]
    expected = cross_val_score(KNeighborsClassifier(n_neighbors=1), x, y, cv=LeaveOneOut()).mean()
    assert loo_1nn_accuracy(real, fake) == pytest.approx(expected)
    assert 0.55 < expected < 0.9            # a case that is neither trivial nor chance


def test_loo_1nn_is_one_when_separated_and_near_half_for_one_distribution():
    rng = np.random.default_rng(1)
    assert loo_1nn_accuracy(rng.normal(0, 1, (100, 10)), rng.normal(8, 1, (100, 10))) == 1.0
    same = loo_1nn_accuracy(rng.normal(0, 1, (300, 10)), rng.normal(0, 1, (300, 10)))
    assert abs(same - 0.5) < 0.06           # standard error 0.02


# -- gradient magnitude --------------------------------------------------------------------------
def test_gradient_magnitude_of_ramps_and_of_blurred_images():
    ramp = torch.arange(8.0).expand(1, 3, 8, 8) * 0.1                 # +0.1 per pixel along x
    assert gradient_magnitude(ramp).item() == pytest.approx(0.1)
    diagonal = ramp + ramp.transpose(-1, -2)                           # +0.1 along x and y
    assert gradient_magnitude(diagonal).item() == pytest.approx(0.1 * 2 ** 0.5)
    torch.manual_seed(0)
    noise = torch.rand(20, 3, 32, 32)
    blurred = F.avg_pool2d(noise, 3, 1, 1, count_include_pad=False)
    assert gradient_magnitude_ratio(noise, noise) == pytest.approx(1.0)
    assert gradient_magnitude_ratio(noise, blurred) < 0.5


# -- classifier two-sample test ----------------------------------------------------------------------
def blob_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Random images: three coloured Gaussian blobs on a noisy grey background, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images = 0.1 * torch.randn(n, 3, size, size, generator=g)
    for _ in range(3):
        centre = torch.rand(n, 2, generator=g) * size
        radius = 1.5 + 2.5 * torch.rand(n, generator=g)
        colour = torch.rand(n, 3, generator=g) * 2 - 1
        blob = torch.exp(-((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2) / (2 * radius[:, None, None] ** 2))
        images += colour[:, :, None, None] * blob[:, None]
    return images.clamp(-1, 1)


def test_two_sample_test_is_near_half_for_one_distribution_and_near_one_for_blur():
    same = two_sample_test(blob_images(200, seed=1), blob_images(200, seed=2), epochs=10)
    assert abs(same["accuracy"] - 0.5) < 0.1, same         # standard error 0.025
    assert same["p_value"] > 0.01
    real = blob_images(200, seed=3)
    blurred = F.avg_pool2d(real, 3, 1, 1, count_include_pad=False)
    blur = two_sample_test(real, blurred, epochs=20)
    assert blur["accuracy"] > 0.9, blur
    assert blur["p_value"] < 1e-10
