"""Per-sample reconstruction metrics.

They take batches of images in [-1, 1], shape (B, 3, S, S), and masks (B, 1, S, S) (0/1 or
probabilities) and return one value per sample, shape (B,):

    mask_iou(pred_mask, true_mask, threshold=0.5)   IoU of the binarised masks
    appearance_l1(generated, real, mask)            mean |generated - real| inside the mask
    psnr(generated, real), ssim(generated, real)    scikit-image's formulas, batched; data range 2

FID, KID and precision/recall (feature extractors, reference statistics) are in :mod:`kpbench.fid`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# --------------------------------------------------------------------------------------------
# Per-sample metrics
# --------------------------------------------------------------------------------------------


def mask_iou(pred_mask: Tensor, true_mask: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of masks (B, 1, S, S) binarised at ``threshold`` -> (B,). Two empty masks give 1."""
    pred = pred_mask.flatten(1) >= threshold  # (B, S*S)
    true = true_mask.flatten(1) >= threshold
    inter = (pred & true).sum(1).double()
    union = (pred | true).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def appearance_l1(generated: Tensor, real: Tensor, mask: Tensor) -> Tensor:
    """Mean absolute error inside ``mask`` (B, 1, S, S) between (B, 3, S, S) images -> (B,).

    The mask weights each pixel (a soft mask counts fractionally); the mean is over the masked
    pixels and the 3 channels, in [-1, 1] units. An empty mask gives NaN.
    """
    weight = mask.expand_as(real).double()  # (B, 3, S, S)
    error = (generated.double() - real.double()).abs() * weight
    total = weight.flatten(1).sum(1)
    return torch.where(total > 0, error.flatten(1).sum(1) / total.clamp(min=1e-12), torch.nan)


DATA_RANGE = 2.0  # images live in [-1, 1]
SSIM_WINDOW = 7  # scikit-image's default uniform window


def psnr(generated: Tensor, real: Tensor) -> Tensor:
    """PSNR in dB (data range 2 for [-1, 1] images) -> (B,) float64; inf when identical.
    The same formula as scikit-image's ``peak_signal_noise_ratio``, for the whole batch at once."""
    error = (generated.double() - real.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(DATA_RANGE**2 / error)).cpu()  # error 0 -> inf, which is the answer


def _window_sums(values: Tensor, dim: int) -> Tensor:
    """Sums of every SSIM_WINDOW consecutive entries along ``dim`` (length L -> L - 6)."""
    running = F.pad(values.movedim(dim, -1), (1, 0)).cumsum(-1)  # running[i] = sum of the first i
    return (running[..., SSIM_WINDOW:] - running[..., :-SSIM_WINDOW]).movedim(-1, dim)


def ssim(generated: Tensor, real: Tensor) -> Tensor:
    """Mean SSIM per sample -> (B,) float64, as scikit-image's ``structural_similarity`` with its
    defaults (7x7 uniform window, sample covariance, K1 0.01, K2 0.03; data range 2, channels
    averaged), computed for the whole batch at once: its filtered maps cropped by 3 pixels on each
    side are exactly the window means of an unpadded 7x7 average pool."""
    x, y = real.double(), generated.double()  # (B, 3, S, S)
    # Window means of x, y, x^2, y^2, xy at once, from running sums along each axis (several
    # times faster than a stride-1 average pool on the CPU): (B, 15, S-6, S-6).
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    means = _window_sums(_window_sums(moments, dim=2), dim=3) / SSIM_WINDOW**2
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = means.chunk(5, dim=1)
    count = SSIM_WINDOW**2
    covariance_norm = count / (count - 1)  # sample covariance, as scikit-image's default
    var_x = covariance_norm * (mean_xx - mean_x * mean_x)
    var_y = covariance_norm * (mean_yy - mean_y * mean_y)
    cov_xy = covariance_norm * (mean_xy - mean_x * mean_y)
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
             / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)))
    return index.flatten(1).mean(1).cpu()
