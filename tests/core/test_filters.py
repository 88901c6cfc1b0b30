"""mxplain.filters: the Gaussian blur the AttGAN reconstruction loss and GradCAM's baselines use."""

import pytest
import torch

from mxplain.filters import gaussian_blur


def test_gaussian_blur_keeps_the_mean_and_removes_pixel_noise():
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((2, 1, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)
    noise = torch.randn(2, 1, 32, 32, generator=gen)
    assert torch.equal(gaussian_blur(noise, 0.0), noise)
    # white noise keeps 1 / (4 pi sigma^2) of its variance after a Gaussian of sigma pixels
    assert float(gaussian_blur(noise, 1.0).var()) == pytest.approx(1 / (4 * 3.14159), rel=0.25)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    assert torch.allclose(gaussian_blur(ramp, 1.0)[..., 4:-4], ramp[..., 4:-4], atol=1e-5)  # linear
