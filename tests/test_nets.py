"""The networks: order invariance of the Siamese encoder, any N, shapes at every size, skips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from kpbench.nets import Discriminator, PatchGenerator, build_networks, level_channels, num_levels
from kpbench.variant import get_variant, list_variants

WIDTH = 0.0625  # 4 ... 32 channels: shapes and invariances, not quality


@pytest.fixture(autouse=True)
def _seeded_single_thread() -> Iterator[None]:
    # One thread: the CI machine's 2 shared cores stall two OpenMP threads.
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_level_channels_follow_the_paper_scaled_by_width() -> None:
    assert level_channels(64, 1.0) == [64, 128, 256, 512]
    assert level_channels(256, 1.0) == [64, 128, 256, 512, 512, 512]  # capped at 512
    assert level_channels(128, 0.5) == [32, 64, 128, 256, 256]
    assert [num_levels(s) for s in (64, 128, 256)] == [4, 5, 6]
    with pytest.raises(ValueError):
        num_levels(96)


@pytest.mark.parametrize("train_mode", [True, False])
def test_siamese_encoding_is_invariant_to_patch_order(train_mode: bool) -> None:
    generator = PatchGenerator(64, WIDTH, n_patches=4).train(train_mode)
    patches = torch.rand(3, 4, 3, 64, 64) * 2 - 1
    z = torch.rand(3, 128) * 2 - 1
    shuffled = patches[:, torch.tensor([2, 0, 3, 1])]
    with torch.no_grad():
        a, b = generator(patches, z), generator(shuffled, z)
        features_a, features_b = generator.encode(patches), generator.encode(shuffled)
    for level_a, level_b in zip(a.features, b.features):  # every level, not only the embedding
        torch.testing.assert_close(level_a, level_b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(features_a, features_b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.image, b.image, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.mask, b.mask, rtol=1e-4, atol=1e-5)
    # ...while a different set of patches does change the encoding.
    other = generator.encode(torch.rand_like(patches))
    assert not torch.allclose(features_a, other, atol=1e-3)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_siamese_generator_takes_any_number_of_patches(n: int) -> None:
    generator = PatchGenerator(64, WIDTH, n_patches=3).eval()
    with torch.no_grad():
        out = generator(torch.rand(2, n, 3, 64, 64) * 2 - 1, torch.rand(2, 128) * 2 - 1)
        features = generator.encode(torch.rand(2, n, 3, 64, 64))
    assert out.image.shape == (2, 3, 64, 64) and out.mask.shape == (2, 1, 64, 64)
    assert features.shape == (2, generator.feature_dim)
    assert out.image.abs().max() <= 1 and 0 <= out.mask.min() and out.mask.max() <= 1


@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes_at_every_size(size: int) -> None:
    nets = build_networks(get_variant("full"), size, WIDTH, n_patches=2)
    patches = torch.rand(2, 2, 3, size, size) * 2 - 1
    out = nets.generator(patches, torch.rand(2, 128) * 2 - 1)
    assert out.image.shape == (2, 3, size, size)
    assert out.mask.shape == (2, 1, size, size)
    # Encoder levels halve from S/2 down to 4x4, then the 128-d embedding at 1x1.
    channels = level_channels(size, WIDTH)
    expected = [(2, c, size // 2 ** (k + 1), size // 2 ** (k + 1)) for k, c in enumerate(channels)]
    assert [tuple(f.shape) for f in out.features] == [*expected, (2, 128, 1, 1)]
    assert expected[-1][2:] == (4, 4)
    assert nets.discriminator(out.image, patches).shape == (2,)
    out.image.mean().backward()  # the graph reaches the encoder's first layer
    assert nets.generator.encoder.levels[0][0].weight.grad is not None


def test_doubled_unet_takes_skips_from_the_mask_decoder() -> None:
    full = build_networks(get_variant("full"), 64, WIDTH, 3).generator
    nomask = build_networks(get_variant("nomask"), 64, WIDTH, 3).generator
    assert full.mask_decoder is not None and nomask.mask_decoder is None
    # Each image-decoder level concatenates the mask decoder's concatenated maps (decoder +
    # encoder channels) in the full model, and only the encoder's maps without a mask decoder.
    assert full.image_decoder.concat_channels == [d + m for d, m in zip(
        level_channels(64, WIDTH)[::-1], full.mask_decoder.concat_channels)]
    assert nomask.image_decoder.concat_channels == [2 * c for c in level_channels(64, WIDTH)[::-1]]
    assert nomask(torch.rand(2, 3, 3, 64, 64), torch.rand(2, 128)).mask is None


def test_concatenating_generator_fixes_n_and_depends_on_order() -> None:
    nets = build_networks(get_variant("cgan"), 64, WIDTH, n_patches=3)
    generator = nets.generator.eval()
    assert not generator.supports_variable_n
    assert generator.encoder.levels[0][0].in_channels == 9  # 3 patches x RGB on channels
    patches, z = torch.rand(2, 3, 3, 64, 64) * 2 - 1, torch.rand(2, 128) * 2 - 1
    with torch.no_grad():
        a = generator(patches, z).image
        b = generator(patches[:, [1, 2, 0]], z).image
    assert not torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="exactly 3"):
        generator(patches[:, :2], z)


def test_conditional_discriminator_sees_image_and_patches() -> None:
    conditional = Discriminator(64, WIDTH, n_patches=3, conditional=True)
    plain = Discriminator(64, WIDTH, n_patches=3)
    assert conditional.body.levels[0][0].in_channels == 3 + 9
    assert plain.body.levels[0][0].in_channels == 3
    image, patches = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 3, 64, 64)
    conditional.eval()
    with torch.no_grad():
        assert conditional(image, patches).shape == (2,)
        # The conditional score changes with the patches; the unconditional one ignores them.
        assert not torch.allclose(conditional(image, patches), conditional(image, torch.rand_like(patches)))
        plain.eval()
        torch.testing.assert_close(plain(image, patches), plain(image, torch.rand_like(patches)))


@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("name", [spec.name for spec in list_variants()])
def test_every_variant_keeps_its_order_contract(name: str, train_mode: bool) -> None:
    """Order-invariant variants (the Siamese sum, independent masks) give the same image and mask
    for any order of the patches, in train and eval mode; the concatenating ones (Fig. 4(b, c),
    the cGAN) do not."""
    spec = get_variant(name)
    generator = build_networks(spec, 64, WIDTH, n_patches=3).generator.train(train_mode)
    patches, z = torch.rand(4, 3, 3, 64, 64) * 2 - 1, torch.rand(4, 128) * 2 - 1
    with torch.no_grad():
        a = generator(patches, z)
        b = generator(patches[:, [2, 0, 1]], z)
    assert generator.order_invariant == spec.order_invariant
    if spec.order_invariant:
        torch.testing.assert_close(a.image, b.image, rtol=1e-4, atol=1e-5)
        if a.mask is not None:
            torch.testing.assert_close(a.mask, b.mask, rtol=1e-4, atol=1e-5)
    else:
        assert (a.image - b.image).abs().mean() > 1e-3


def test_siamese_concat_keeps_each_patch_in_its_own_channels() -> None:
    generator = build_networks(get_variant("siamese_concat"), 64, WIDTH, n_patches=3).generator.eval()
    patches = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        levels = generator.encode_levels(patches)
        single = generator.encoder(patches[:, 1])  # the shared encoder on the second patch alone
    assert generator.encoder.levels[0][0].in_channels == 3  # one patch at a time (Siamese)
    assert levels[-1].shape == (2, 3 * 128, 1, 1)  # N embeddings side by side
    c = single[0].shape[1]
    torch.testing.assert_close(levels[0][:, c:2 * c], single[0])  # slot 2 holds patch 2's maps
    with pytest.raises(ValueError, match="exactly 3"):
        generator(patches[:, :2], torch.rand(2, 128))


def test_independent_masks_are_the_max_of_each_patch_alone() -> None:
    """Fig. 4(d): the mask from N patches is the pixel-wise max of the masks each patch gives on
    its own (eval mode), which is what makes them independent; the paper's sum is not."""
    patches, z = torch.rand(2, 3, 3, 64, 64) * 2 - 1, torch.rand(2, 128) * 2 - 1
    for name, independent in (("independent_masks", True), ("full", False)):
        generator = build_networks(get_variant(name), 64, WIDTH, n_patches=3).generator.eval()
        with torch.no_grad():
            joint = generator(patches, z).mask
            alone = torch.stack([generator(patches[:, i:i + 1], z).mask for i in range(3)]).amax(0)
        assert torch.allclose(joint, alone, atol=1e-5) == independent, name


def test_noskip_image_decoder_has_no_skip_connections() -> None:
    full = build_networks(get_variant("full"), 64, WIDTH, n_patches=3).generator
    noskip = build_networks(get_variant("noskip"), 64, WIDTH, n_patches=3).generator.eval()
    decoder_channels = level_channels(64, WIDTH)[::-1]
    assert not noskip.image_decoder.uses_skips and full.image_decoder.uses_skips
    assert noskip.image_decoder.concat_channels == decoder_channels  # nothing concatenated
    assert noskip.mask_decoder is not None and noskip.mask_decoder.uses_skips  # the mask U-net stays
    # The image depends on the encoder's maps only through the 128-d code: the image decoder reads
    # nothing else from the encoder or mask decoder.
    calls: list[int] = []
    noskip.image_decoder.levels[0].register_forward_hook(lambda m, args, out: calls.append(args[0].shape[1]))
    with torch.no_grad():
        out = noskip(torch.rand(2, 3, 3, 64, 64), torch.rand(2, 128))
    assert calls == [decoder_channels[0]] and out.image.shape == (2, 3, 64, 64)
