"""Model assembly: the seed's exact parameter counts, counts at other settings, the registry."""
import pytest

from eanet.config import ModelConfig
from eanet.models import ATTENTION_TYPES
from eanet.models.model import attention_factory, build_model, count_parameters


def _counts(**model):
    cfg = ModelConfig(**model)
    return count_parameters(build_model(cfg, image_size=32, num_classes=100))


def test_seed_parameter_counts():
    assert _counts(attention="external")["trainable"] == 361_380
    assert _counts(attention="self")["trainable"] == 623_268


def _expected_external(D=64, mlp=64, blocks=8, heads=4, dc=4, patch=2, image=32, classes=100):
    n, d, s = (image // patch) ** 2, D // heads, D // dc
    embedding = patch * patch * 3 * D + D + n * D
    attention = (D * D * dc + D * dc) + (d * s + s) + (s * d + d) + (D * dc * D + D)
    block = attention + 4 * D + (D * mlp + mlp) + (mlp * D + D)
    return embedding + blocks * block + D * classes + classes


def _expected_self(D=64, mlp=64, blocks=8, heads=4, patch=2, image=32, classes=100):
    n = (image // patch) ** 2
    embedding = patch * patch * 3 * D + D + n * D
    attention = 3 * (D * heads * D + heads * D) + (heads * D * D + D)  # q, k, v (key_dim=D), output
    block = attention + 4 * D + (D * mlp + mlp) + (mlp * D + D)
    return embedding + blocks * block + D * classes + classes


@pytest.mark.parametrize("patch, heads, dc", [(4, 2, 2), (8, 8, 1), (2, 1, 8), (4, 4, 4)])
def test_external_counts_follow_the_formula(patch, heads, dc):
    counts = _counts(attention="external", patch_size=patch, num_heads=heads, dim_coefficient=dc)
    assert counts["trainable"] == _expected_external(heads=heads, dc=dc, patch=patch)


@pytest.mark.parametrize("patch, heads", [(4, 2), (8, 8), (2, 1)])
def test_self_counts_follow_the_formula(patch, heads):
    counts = _counts(attention="self", patch_size=patch, num_heads=heads)
    assert counts["trainable"] == _expected_self(heads=heads, patch=patch)


def test_components_add_up():
    counts = _counts(attention="external")
    parts = ("patch_embedding", "attention", "mlp", "norm", "head")
    assert sum(counts[p] for p in parts) == counts["trainable"]
    assert counts["attention"] == 8 * 33_632


def test_unknown_attention_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown model.attention='linear'. Valid values: external, self"):
        attention_factory(ModelConfig(attention="linear"))
    assert set(ATTENTION_TYPES) == {"external", "self"}


@pytest.mark.parametrize("contrast_clip", [False, True])
def test_contrast_after_normalisation_clips_only_when_asked(contrast_clip):
    """The seed's order puts RandomContrast after the normalisation, on values around 0. Keras 3's
    layer clips to pixel values, [0, 255]: with contrast_clip that zeroes every negative value in
    training; without it the layer is the plain contrast change (x - mean) * f + mean per image and
    channel, f in [0.9, 1.1]. At inference both are the normalisation alone."""
    import keras
    import numpy as np

    from eanet.config import AugmentationConfig
    from eanet.models.model import build_augmentation

    contrast_only = AugmentationConfig(horizontal_flip=False, rotation=0.0, zoom=0.0,
                                       contrast=0.1, contrast_clip=contrast_clip)
    mean, variance = [120.0, 110.0, 100.0], [3600.0, 3600.0, 3600.0]
    augmentation = build_augmentation(contrast_only, mean, variance, seed=3)
    images = np.random.default_rng(0).uniform(0, 255, (8, 6, 6, 3)).astype("float32")
    normalised = (images - np.array(mean, "float32")) / 60.0
    trained = keras.ops.convert_to_numpy(augmentation(images, training=True))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(augmentation(images, training=False)),
                               normalised, rtol=1e-5, atol=1e-5)
    assert (normalised < 0).mean() > 0.3
    if contrast_clip:
        assert trained.min() == 0.0 and (trained == 0).mean() > 0.3  # the negatives are gone
    else:
        centre = normalised.mean(axis=(1, 2), keepdims=True)  # per image and channel
        spread, changed = normalised - centre, trained - centre
        factor = (spread * changed).sum(axis=(1, 2, 3), keepdims=True) / \
            (spread ** 2).sum(axis=(1, 2, 3), keepdims=True)  # one factor per image
        np.testing.assert_allclose(trained, spread * factor + centre, rtol=1e-5, atol=1e-5)
        assert 0.9 - 1e-4 <= factor.min() and factor.max() <= 1.1 + 1e-4
        assert trained.min() < 0
