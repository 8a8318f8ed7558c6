"""The networks of Lee et al. (ECCV 2018), "holistic image generation from key local patches".

Read top to bottom: building blocks, the part encoder, the U-net decoders, the generator that
ties them together, the discriminator, and :func:`build_networks`, which turns a variant spec
into modules. Shapes use B = batch, N = patches per image, S = image side (64, 128 or 256),
L = number of stride-2 levels = log2(S) - 2 (4 at 64, 5 at 128, 6 at 256).

Channel counts follow the authors' code (64, 128, 256, 512, capped at 512; the paper leaves layer
details to its supplementary material) times a width multiplier, so a CPU can train
``width=0.125`` and a GPU the authors' ``width=1``. The 128-d embedding and the 128-d noise z
keep their size at every width: they are the model's interface, not capacity.

    patches (B,N,3,S,S) --Siamese encoder (shared weights)--> per-level features summed over N
        levels e_1 (C_1,S/2) ... e_L (C_L,4x4), embedding E (128,1,1)
    mask decoder   E              -> 4x4, up x2 per level, concat e_l after each level -> M (1,S,S)
    image decoder  cat(E, z)      -> 4x4, up x2 per level, concat the mask decoder's
                                     (already concatenated) features after each level -> I (3,S,S)
    discriminator  image [+ patches on channels] -> down x2 per level -> 4x4 valid conv -> logit

A variant may bring its own generator or discriminator instead (kpbench.variant.GeneratorNetwork,
DiscriminatorNetwork; docs/extending.md): :func:`build_networks` builds it, checks it against the
contract on a small batch (:func:`check_generator`, :func:`check_discriminator`) and wraps the
generator in :class:`CustomGenerator`, which gives it the interface the rest of kpbench uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kpbench.data import SUPPORTED_SIZES
from kpbench.errors import KpbenchError
from kpbench.variant import ENCODER_FUSIONS, ORDER_INVARIANT_FUSIONS, NetworkSettings

if TYPE_CHECKING:
    from kpbench.variant import VariantSpec

BASE_CHANNELS = 64
MAX_CHANNELS = 512


def num_levels(size: int) -> int:
    """Stride-2 levels from S down to 4x4: 4 at 64, 5 at 128, 6 at 256."""
    if size not in SUPPORTED_SIZES:
        raise ValueError(f"image size {size} not supported; choose one of {SUPPORTED_SIZES}")
    return int(math.log2(size)) - 2


def level_channels(size: int, width: float) -> list[int]:
    """Channels of encoder level 1..L (resolution S/2 ... 4): 64, 128, 256, 512, 512, ... x width."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return [max(1, round(min(BASE_CHANNELS * 2**i, MAX_CHANNELS) * width)) for i in range(num_levels(size))]


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016): conv weights N(0, 0.02), zero biases, BN scale
    N(1, 0.02). The authors' public code defines this as ``weights_init`` but leaves its calls
    commented out, so it is *not* what they trained with; kept selectable as ``init="dcgan"``.
    Its measured effect on CelebA is in docs/results/celeba-64/."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def pytorch_default_init(module: nn.Module) -> None:
    """PyTorch's own initialisation, which every layer already has when it is built (Kaiming-uniform
    with a=sqrt(5) for convolutions, BN scale 1 and shift 0): nothing to do. The authors' public
    code also leaves initialisation to the framework, but the PyTorch it ran on (0.3/0.4) had
    other defaults: BN scale U(0, 1), and transposed-conv bounds 1/sqrt(C_in k^2) where today's
    use C_out k^2; plain convolutions match. So this is the authors' choice, not their exact
    weights (docs/fidelity.md)."""


def pytorch04_init(module: nn.Module) -> None:
    """The defaults of PyTorch 0.3/0.4, which the authors' code ran on: every convolution, plain or
    transposed, U(-b, b) with b = 1/sqrt(C_in k^2) for weights and biases; BN scale U(0, 1),
    shift 0. The closest kpbench gets to the authors' starting weights."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        # Transposed weights are (C_in, C_out, k, k) and plain ones (C_out, C_in, k, k): take C_in
        # from the module, not from the weight's layout.
        bound = 1.0 / math.sqrt(module.in_channels * math.prod(module.kernel_size))
        nn.init.uniform_(module.weight, -bound, bound)
        if module.bias is not None:
            nn.init.uniform_(module.bias, -bound, bound)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.uniform_(module.weight, 0.0, 1.0)
        nn.init.zeros_(module.bias)


# Weight initialisation schemes by name (``VariantSpec.init``); applied with ``module.apply``.
INITIALISERS: dict[str, Callable[[nn.Module], None]] = {
    "pytorch": pytorch_default_init,
    "dcgan": dcgan_init,
    "pytorch04": pytorch04_init,
}


def down(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    """5x5 stride-2 conv, (BN), LeakyReLU(0.2): (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 5, 2, 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def up(in_channels: int, out_channels: int) -> nn.Sequential:
    """5x5 stride-2 transposed conv, BN, ReLU: (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 5, 2, 2, output_padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvEncoder(nn.Module):
    """Stride-2 conv stack to 4x4, then a 4x4 valid conv; returns every level.

    (B, C_in, S, S) -> [e_1 (B, C_1, S/2, S/2), ..., e_L (B, C_L, 4, 4), head (B, out_dim, 1, 1)]
    The first level has no BN (DCGAN practice); the head is linear (no BN, no activation). The
    authors' code puts a LeakyReLU(0.2) after the part encoder's head (the embedding E) and a
    sigmoid after the discriminator's (here folded into BCE-with-logits).
    """

    def __init__(self, in_channels: int, size: int, width: float, out_dim: int) -> None:
        super().__init__()
        self.channels = level_channels(size, width)
        ins = [in_channels, *self.channels[:-1]]
        self.levels = nn.ModuleList(
            down(c_in, c_out, batch_norm=k > 0) for k, (c_in, c_out) in enumerate(zip(ins, self.channels))
        )
        self.head = nn.Conv2d(self.channels[-1], out_dim, 4)  # 4x4 valid: (4, 4) -> (1, 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        features.append(self.head(x))
        return features


class UNetDecoder(nn.Module):
    """From a 1x1 code up to S x S, concatenating one skip tensor after each level.

    code (B, in_dim, 1, 1), skips [k_L (B, K_L, 4, 4), ..., k_1 (B, K_1, S/2, S/2)] (coarse first)
      stem: 4x4 transposed conv -> (B, D_L, 4, 4), BN, ReLU;  cat k_L -> (B, D_L + K_L, 4, 4)
      each level: up x2 -> (B, D_l, 2h, 2w);                   cat k_l -> (B, D_l + K_l, 2h, 2w)
      last: up x2 to (B, out_channels, S, S), then ``activation``
    D_l mirrors the encoder's C_l (512 ... 64, halving), so each level meets a same-size skip.
    Returns the output and the concatenated feature maps (coarse first): the doubled U-net's
    image decoder takes the mask decoder's concatenated maps as its skips.
    """

    def __init__(
        self,
        in_dim: int,
        size: int,
        width: float,
        skip_channels: list[int] | None,
        out_channels: int,
        activation: nn.Module,
    ) -> None:
        super().__init__()
        dec = level_channels(size, width)[::-1]  # D_L ... D_1, coarse first
        self.uses_skips = skip_channels is not None  # None: a plain decoder (Fig. 5, no skips)
        skip_channels = skip_channels if skip_channels is not None else [0] * len(dec)
        if len(skip_channels) != len(dec):
            raise ValueError(f"{len(dec)} skip tensors expected, got {len(skip_channels)}")
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(in_dim, dec[0], 4, bias=False),  # (1, 1) -> (4, 4)
            nn.BatchNorm2d(dec[0]),
            nn.ReLU(inplace=True),
        )
        concat = [d + k for d, k in zip(dec, skip_channels)]
        self.levels = nn.ModuleList(up(c_in, c_out) for c_in, c_out in zip(concat[:-1], dec[1:]))
        self.out = nn.ConvTranspose2d(concat[-1], out_channels, 5, 2, 2, output_padding=1)
        self.activation = activation
        self.concat_channels = concat

    def forward(self, code: Tensor, skips: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        if not self.uses_skips:  # plain decoder: every level only upsamples
            x = self.stem(code)
            concatenated = [x]
            for level in self.levels:
                x = level(x)
                concatenated.append(x)
            return self.activation(self.out(x)), concatenated
        assert skips is not None
        x = torch.cat([self.stem(code), skips[0]], 1)
        concatenated = [x]
        for level, skip in zip(self.levels, skips[1:]):
            x = torch.cat([level(x), skip], 1)
            concatenated.append(x)
        return self.activation(self.out(x)), concatenated


@dataclass
class GeneratorOutput:
    image: Tensor  # (B, 3, S, S) in [-1, 1]
    mask: Tensor | None  # (B, 1, S, S) in [0, 1]; None without a mask decoder
    features: list[Tensor]  # fused encoder levels e_1 .. e_L and the embedding E (B, 128, 1, 1)


class PatchGenerator(nn.Module):
    """Patches (B, N, 3, S, S) and noise z (B, z_dim) -> image, predicted mask, encoder features.

    ``fusion="sum"`` (the paper, Fig. 4(e)): one Siamese encoder runs on all B*N patches as a
    single batch (so BatchNorm statistics do not depend on patch order either; the authors' code
    runs it once per patch slot, with per-slot statistics) and every level is summed over the N
    patches: E = E_1 + ... + E_N, invariant to order and defined for any N.
    ``fusion="concat"`` (Fig. 4(b), and the pix2pix-style baseline): the N patches are stacked on
    channels, (B, 3N, S, S), into one encoder; this fixes N and the order matters.
    ``fusion="siamese_concat"`` (Fig. 4(c)): the Siamese encoder as in "sum", but each level is
    the per-patch maps concatenated on channels in input order, (B, N*C, h, w), and the embedding
    is (B, N*128): N is fixed, the order matters, the decoders are N times wider at their input.
    ``fusion="independent"`` (Fig. 4(d)): the Siamese encoder, then the mask decoder runs on each
    patch's own embedding and maps, (B*N, ...): N masks predicted independently, merged by a
    pixel-wise max into M. The image decoder gets the summed embedding (as in "sum") and, as skips,
    the per-patch mask decoder maps merged by the same max. Order-invariant, any N.

    ``mask_decoder=True``: the mask decoder predicts M and the image decoder is the doubled U-net
    (skips from the mask decoder's concatenated maps). ``False``: the image decoder is a plain
    U-net with skips from the encoder alone and no mask is predicted. ``image_skips=False``
    (Fig. 5's "without skip connections"): the image decoder has no skips at all and decodes from
    cat(E, z) alone; the mask decoder keeps its U-net.
    """

    def __init__(
        self,
        size: int,
        width: float,
        n_patches: int,
        fusion: str = "sum",
        mask_decoder: bool = True,
        embed_dim: int = 128,
        z_dim: int = 128,
        image_skips: bool = True,
    ) -> None:
        super().__init__()
        if fusion not in ENCODER_FUSIONS:
            raise ValueError(f"unknown encoder fusion {fusion!r}")
        if fusion == "independent" and not mask_decoder:
            raise ValueError("independent per-patch masks need the mask decoder")
        self.size, self.n_patches, self.fusion, self.z_dim = size, n_patches, fusion, z_dim
        self.encoder = ConvEncoder(3 * n_patches if fusion == "concat" else 3, size, width, embed_dim)
        # Channels of the fused levels the decoders see: N times wider for siamese_concat.
        copies = n_patches if fusion == "siamese_concat" else 1
        enc_skips = [c * copies for c in self.encoder.channels[::-1]]  # C_L ... C_1, coarse first
        code_dim = embed_dim * copies
        self.mask_decoder: UNetDecoder | None = None
        image_skips_channels: list[int] | None = enc_skips
        if mask_decoder:
            self.mask_decoder = UNetDecoder(code_dim, size, width, enc_skips, 1, nn.Sigmoid())
            image_skips_channels = self.mask_decoder.concat_channels
        if not image_skips:
            image_skips_channels = None
        self.image_decoder = UNetDecoder(code_dim + z_dim, size, width, image_skips_channels, 3, nn.Tanh())
        self.feature_dim = (embed_dim + sum(self.encoder.channels)) * copies

    can_encode = True  # encode() gives the fused levels (the classification protocol's features)

    @property
    def supports_variable_n(self) -> bool:
        return self.fusion in ORDER_INVARIANT_FUSIONS

    @property
    def order_invariant(self) -> bool:
        return self.fusion in ORDER_INVARIANT_FUSIONS

    def _check_n(self, n: int) -> None:
        if not self.supports_variable_n and n != self.n_patches:
            raise ValueError(f"this generator concatenates exactly {self.n_patches} patches, got {n}")

    def encode_levels(self, patches: Tensor) -> list[Tensor]:
        """(B, N, 3, S, S) -> fused [e_1 (B, C_1, S/2, S/2), ..., e_L (B, C_L, 4, 4), E (B, 128, 1, 1)]
        (channels N times larger for siamese_concat)."""
        b, n = patches.shape[:2]
        self._check_n(n)
        if self.fusion == "concat":
            levels: list[Tensor] = self.encoder(patches.flatten(1, 2))  # (B, 3N, S, S)
            return levels
        levels = self.encoder(patches.flatten(0, 1))  # each (B*N, C, h, w)
        if self.fusion == "siamese_concat":
            return [level.unflatten(0, (b, n)).flatten(1, 2) for level in levels]  # (B, N*C, h, w)
        return [level.unflatten(0, (b, n)).sum(1) for level in levels]

    def forward(self, patches: Tensor, z: Tensor) -> GeneratorOutput:
        if self.fusion == "independent":
            return self._forward_independent(patches, z)
        features = self.encode_levels(patches)
        embedding, skips = features[-1], features[-2::-1]  # skips coarse first: e_L ... e_1
        mask = None
        if self.mask_decoder is not None:
            mask, skips = self.mask_decoder(embedding, skips)
        code = torch.cat([embedding, z.view(*z.shape, 1, 1).to(embedding.dtype)], 1)  # (B, 128+z, 1, 1)
        image, _ = self.image_decoder(code, skips)
        return GeneratorOutput(image=image, mask=mask, features=features)

    def _forward_independent(self, patches: Tensor, z: Tensor) -> GeneratorOutput:
        """Fig. 4(d): one mask per patch from that patch alone, merged by a pixel-wise max."""
        assert self.mask_decoder is not None
        b, n = patches.shape[:2]
        per_patch = self.encoder(patches.flatten(0, 1))  # each (B*N, C, h, w)
        masks, maps = self.mask_decoder(per_patch[-1], per_patch[-2::-1])  # (B*N, 1, S, S), coarse first
        mask = masks.unflatten(0, (b, n)).amax(1)  # (B, 1, S, S)
        skips = [level.unflatten(0, (b, n)).amax(1) for level in maps]
        features = [level.unflatten(0, (b, n)).sum(1) for level in per_patch]
        embedding = features[-1]
        code = torch.cat([embedding, z.view(*z.shape, 1, 1).to(embedding.dtype)], 1)
        image, _ = self.image_decoder(code, skips)
        return GeneratorOutput(image=image, mask=mask, features=features)

    def encode(self, patches: Tensor) -> Tensor:
        """Feature vector (B, feature_dim): the embedding E and every fused level, average-pooled."""
        features = self.encode_levels(patches)
        return torch.cat([level.mean((2, 3)) for level in features], 1)


class Discriminator(nn.Module):
    """Image (B, 3, S, S) [+ patches (B, N, 3, S, S) when conditional] -> logits (B,).

    Same 5x5 stride-2 stack as the encoder (64 ... 512, no BN on the first level), then a 4x4
    valid conv to one logit. Unconditional (the paper): it sees only the image. Conditional
    (pix2pix): it sees the image and the N patches stacked on channels, (B, 3 + 3N, S, S).
    """

    def __init__(self, size: int, width: float, n_patches: int, conditional: bool = False) -> None:
        super().__init__()
        self.conditional = conditional
        self.body = ConvEncoder(3 + (3 * n_patches if conditional else 0), size, width, 1)

    def forward(self, image: Tensor, patches: Tensor) -> Tensor:
        x = torch.cat([image, patches.flatten(1, 2).to(image.dtype)], 1) if self.conditional else image
        logits: Tensor = self.body(x)[-1].flatten()
        return logits


class CustomGenerator(nn.Module):
    """A variant's own generator network behind the interface of :class:`PatchGenerator`:
    ``forward`` returns a :class:`GeneratorOutput` (the network may return ``(image, mask)``),
    ``encode`` is the network's own ``encode`` when it has one (``can_encode``), and the
    promises of its :class:`kpbench.variant.GeneratorNetwork` say which N it takes. Its weights
    are the network's, under ``network.`` in the state dict."""

    def __init__(self, network: nn.Module, spec: VariantSpec, n_patches: int) -> None:
        super().__init__()
        assert spec.generator_network is not None
        self.network = network
        self.n_patches, self.z_dim = n_patches, spec.z_dim
        self.fusion = f"custom:{spec.name}"  # names the architecture (shared random-encoder scores)
        self.supports_variable_n = spec.generator_network.any_n
        self.order_invariant = spec.generator_network.order_invariant
        self.variant = spec.name

    @property
    def encoder(self) -> nn.Module:
        """The modules behind :meth:`encode`: the whole network."""
        return self.network

    @property
    def can_encode(self) -> bool:
        return callable(getattr(self.network, "encode", None))

    def _check_n(self, n: int) -> None:
        if not self.supports_variable_n and n != self.n_patches:
            raise ValueError(f"this generator takes exactly {self.n_patches} patches, got {n}")

    def forward(self, patches: Tensor, z: Tensor) -> GeneratorOutput:
        self._check_n(patches.shape[1])
        result = self.network(patches, z)
        if isinstance(result, GeneratorOutput):
            return result
        if isinstance(result, Tensor):  # an image alone: no mask
            return GeneratorOutput(image=result, mask=None, features=[])
        image, mask = result
        return GeneratorOutput(image=image, mask=mask, features=[])

    def encode(self, patches: Tensor) -> Tensor:
        """(B, N, 3, S, S) -> (B, D): the network's own ``encode``."""
        if not self.can_encode:
            raise KpbenchError(f"variant {self.variant}'s generator has no encode(patches) method")
        self._check_n(patches.shape[1])
        features: Tensor = self.network.encode(patches)  # type: ignore[operator]
        return features.flatten(1)

    @property
    def feature_dim(self) -> int:
        return int(getattr(self.network, "feature_dim", 0))


Generator = PatchGenerator | CustomGenerator  # what kpbench trains and evaluates


@dataclass
class Networks:
    generator: Generator
    discriminator: nn.Module | None  # Discriminator, or a variant's own


# Tolerances of the build-time checks: outputs in range up to float error, and "order-invariant"
# meaning a permutation of the patches changes no output value by more than this.
RANGE_TOLERANCE = 1e-4
ORDER_TOLERANCE = 1e-4
CHECK_BATCH = 2


def _contract_error(spec: VariantSpec, message: str) -> KpbenchError:
    return KpbenchError(f"variant {spec.name}'s generator does not keep the contract "
                        f"(docs/extending.md): {message}")


def _on_meta(module: nn.Module) -> bool:
    """Built under ``torch.device("meta")``: shapes only, no values to check."""
    return torch.empty(()).is_meta or any(p.is_meta for p in module.parameters())


@torch.no_grad()
def check_generator(generator: CustomGenerator, spec: VariantSpec, size: int, n_patches: int) -> None:
    """Run a freshly built custom generator on a small random batch (eval mode, its RNG state and
    training mode restored) and check the contract: image (B, 3, S, S) in [-1, 1], mask
    (B, 1, S, S) in [0, 1] exactly when ``spec.mask_decoder``, N = 1 and N + 1 accepted when it
    promises any N, the same output for permuted patches when it promises order invariance,
    and ``encode`` giving (B, D). A one-line error says what is wrong. Skipped on the meta
    device (a plan's cost estimate, which computes nothing)."""
    if _on_meta(generator):
        return
    was_training = generator.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator.eval()
        try:
            counts = [n_patches] + ([1, n_patches + 1] if generator.supports_variable_n else [])
            for n in counts:
                patches = torch.rand(CHECK_BATCH, n, 3, size, size) * 2 - 1
                z = torch.rand(CHECK_BATCH, spec.z_dim) * 2 - 1
                try:
                    out = generator(patches, z)
                except Exception as error:
                    call = f"forward(patches {tuple(patches.shape)}, z {tuple(z.shape)})"
                    raise _contract_error(spec, f"{call} failed: {type(error).__name__}: {error}") from None
                _check_output(spec, out, size, n)
                if generator.order_invariant and n >= 2:
                    permuted = generator(patches.roll(1, dims=1), z)
                    change = (permuted.image - out.image).abs().max().item()
                    if out.mask is not None and permuted.mask is not None:
                        change = max(change, (permuted.mask - out.mask).abs().max().item())
                    if change > ORDER_TOLERANCE:
                        raise _contract_error(spec, f"it promises order invariance, but permuting {n} "
                                              f"patches changes its output by up to {change:.3g}")
                if generator.can_encode:
                    features = generator.encode(patches)
                    if features.dim() != 2 or features.shape[0] != CHECK_BATCH:
                        raise _contract_error(spec, f"encode gave {tuple(features.shape)}, not (B, D)")
        finally:
            generator.train(was_training)


def _check_output(spec: VariantSpec, out: GeneratorOutput, size: int, n: int) -> None:
    image, mask = out.image, out.mask
    if tuple(image.shape) != (CHECK_BATCH, 3, size, size):
        raise _contract_error(spec, f"the image is {tuple(image.shape)} for {n} patches, not "
                              f"(B, 3, {size}, {size})")
    if image.abs().max().item() > 1 + RANGE_TOLERANCE:
        raise _contract_error(spec, "the image leaves [-1, 1] (end with tanh)")
    if (mask is not None) != spec.mask_decoder:
        returns = "it returns a mask" if mask is not None else "it returns no mask"
        raise _contract_error(spec, f"{returns} while the spec's mask_decoder is {spec.mask_decoder}")
    if mask is not None:
        if tuple(mask.shape) != (CHECK_BATCH, 1, size, size):
            raise _contract_error(spec, f"the mask is {tuple(mask.shape)}, not (B, 1, {size}, {size})")
        if mask.min().item() < -RANGE_TOLERANCE or mask.max().item() > 1 + RANGE_TOLERANCE:
            raise _contract_error(spec, "the mask leaves [0, 1] (end with a sigmoid)")


@torch.no_grad()
def check_discriminator(discriminator: nn.Module, spec: VariantSpec, size: int, n_patches: int) -> None:
    """A freshly built custom discriminator gives logits (B,) for image (B, 3, S, S) and patches
    (skipped on the meta device)."""
    if _on_meta(discriminator):
        return
    was_training = discriminator.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        discriminator.eval()
        try:
            image = torch.rand(CHECK_BATCH, 3, size, size) * 2 - 1
            patches = torch.rand(CHECK_BATCH, n_patches, 3, size, size) * 2 - 1
            try:
                logits = discriminator(image, patches)
            except Exception as error:
                raise KpbenchError(f"variant {spec.name}'s discriminator failed on image "
                                   f"{tuple(image.shape)} and patches {tuple(patches.shape)}: "
                                   f"{type(error).__name__}: {error}") from None
            if not isinstance(logits, Tensor) or tuple(logits.shape) != (CHECK_BATCH,):
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise KpbenchError(f"variant {spec.name}'s discriminator gave {shape}, not logits (B,) "
                                   "(docs/extending.md)")
        finally:
            discriminator.train(was_training)


def build_networks(spec: VariantSpec, size: int, width: float, n_patches: int) -> Networks:
    """Freshly initialised modules for a variant (CPU, train mode), initialised by ``spec.init``
    (see INITIALISERS; "pytorch" leaves a custom network as its factory built it);
    ``torch.manual_seed`` first for reproducible weights. A variant's own networks are built by
    its factories and checked against the contract."""
    settings = NetworkSettings(spec, size, width, n_patches)
    generator: Generator
    if spec.generator_network is not None:
        generator = CustomGenerator(spec.generator_network.build(settings), spec, n_patches)
    else:
        generator = PatchGenerator(
            size,
            width,
            n_patches,
            fusion=spec.encoder_fusion,
            mask_decoder=spec.mask_decoder,
            embed_dim=spec.embed_dim,
            z_dim=spec.z_dim,
            image_skips=spec.image_skips,
        )
    discriminator: nn.Module | None = None
    if spec.discriminator_network is not None:
        discriminator = spec.discriminator_network.build(settings)
    elif spec.discriminator != "none":
        discriminator = Discriminator(size, width, n_patches, conditional=spec.discriminator == "conditional")
    initialise = INITIALISERS[spec.init]
    generator.apply(initialise)
    if discriminator is not None:
        discriminator.apply(initialise)
    if isinstance(generator, CustomGenerator):
        check_generator(generator, spec, size, n_patches)
    if spec.discriminator_network is not None and discriminator is not None:
        check_discriminator(discriminator, spec, size, n_patches)
    return Networks(generator, discriminator)
