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
    with pytest.raises(ValueError, match="Valid values: external, self"):
        attention_factory("linear")
    assert set(ATTENTION_TYPES) == {"external", "self"}
