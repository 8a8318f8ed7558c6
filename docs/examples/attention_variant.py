"""An example variant that brings its own generator (docs/extending.md): not a U-net but
self-attention over patch embeddings, averaged over the patches, so its output does not depend
on their order. Use it with `kpbench --plugin docs/examples/attention_variant.py ...`."""

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from kpbench.losses import LossInputs
from kpbench.variant import GeneratorNetwork, LossTerm, NetworkSettings, reference_variant, register_variant


class AttentionPool(nn.Module):
    """Not a U-net: self-attention over patch embeddings, averaged over the patches."""

    def __init__(self, settings: NetworkSettings) -> None:
        super().__init__()
        self.size = settings.size
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(3 * 64, 64))
        self.attention = nn.TransformerEncoderLayer(64, nhead=4, dropout=0.0, batch_first=True)
        self.head = nn.Linear(64 + settings.spec.z_dim, 4 * 8 * 8)

    def encode(self, patches: torch.Tensor) -> torch.Tensor:       # optional: (B, N, 3, S, S) -> (B, D)
        b, n = patches.shape[:2]
        tokens = self.embed(patches.flatten(0, 1)).unflatten(0, (b, n))
        return self.attention(tokens).mean(1)                      # a mean over N: order-invariant

    def forward(self, patches: torch.Tensor, z: torch.Tensor):
        maps = self.head(torch.cat([self.encode(patches), z], 1)).view(-1, 4, 8, 8)
        maps = F.interpolate(maps, size=self.size, mode="bilinear", align_corners=False)
        return torch.tanh(maps[:, :3]), torch.sigmoid(maps[:, 3:])  # image, mask


def total_variation(inputs: LossInputs) -> torch.Tensor:
    image = inputs.out.image.float()
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean()


ATTENTION_POOL = register_variant(replace(
    reference_variant(),                       # the paper's objective and discriminator ...
    name="attention_pool",
    description="Self-attention over patch embeddings, mean-pooled; the paper's discriminator.",
    encoder_fusion="custom",                   # ... with this generator instead of the U-nets
    generator_network=GeneratorNetwork(AttentionPool, order_invariant=True),
    loss_terms=(LossTerm("total_variation", weight=1.0, compute=total_variation),),
), order=100)
