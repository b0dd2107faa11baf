"""Every config group composes and builds; typos, wrong types and impossible values fail at start-up."""
import re

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from conftest import CONF_DIR, compose_config
from eanet.config import Config, ConfigError
from eanet.validation import validate
from eanet.models.model import build_model, count_parameters
from eanet.training.optimization import build_optimizer

GROUPS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
          for group in ("model", "data", "optimizer", "trainer", "tracking")}


def test_groups_are_the_documented_ones():
    assert GROUPS["model"] == ["ea", "vit"]
    assert GROUPS["optimizer"] == ["adam", "adamw", "sgd"]
    assert {"cifar100", "synthetic"} <= set(GROUPS["data"])
    assert {"default", "quick"} <= set(GROUPS["trainer"])


def test_defaults_are_the_seed_hyperparameters():
    cfg = validate(compose_config())
    assert isinstance(cfg, Config)
    m, o, t = cfg.model, cfg.optimizer, cfg.trainer
    assert (m.attention, m.patch_size, m.embedding_dim, m.mlp_dim, m.num_blocks, m.num_heads,
            m.dim_coefficient) == ("external", 2, 64, 64, 8, 4, 4)
    assert (m.attention_dropout, m.projection_dropout, m.mlp_dropout) == (0.2, 0.2, 0.2)
    assert (o.name, o.learning_rate, o.weight_decay) == ("adamw", 1e-3, 1e-4)
    assert (t.epochs, t.batch_size, t.label_smoothing) == (50, 128, 0.1)
    assert (cfg.data.name, cfg.data.image_size, cfg.data.validation_split) == ("cifar100", 32, 0.2)
    assert cfg.seed == 0


@pytest.mark.parametrize("group", ["model", "data", "optimizer", "trainer", "tracking"])
def test_every_option_composes_and_builds(group):
    for option in GROUPS[group]:
        cfg = validate(compose_config([f"{group}={option}"]))
        build_optimizer(cfg.optimizer)
        if group in ("model", "data"):
            model = build_model(cfg.model, cfg.data.image_size, cfg.data.num_classes)
            assert count_parameters(model)["trainable"] > 0


def test_typo_in_a_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="patchsize"):
        compose_config(["model.patchsize=4"])


def test_wrong_type_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ValidationError), match="patch_size"):
        compose_config(["model.patch_size=big"])


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException, match=r"(?s)Available options.*ea.*vit"):
        compose_config(["model=resnet"])


@pytest.mark.parametrize("override, message", [
    ("model.patch_size=5", "data.image_size divisible by model.patch_size"),
    ("data.image_size=33", "data.image_size divisible by model.patch_size"),
    ("model.num_heads=5", "model.embedding_dim divisible by model.num_heads"),
    ("model.dim_coefficient=3", "model.embedding_dim divisible by model.dim_coefficient"),
    ("model.embedding_dim=0", "model.embedding_dim to be a positive"),
    ("model.num_blocks=-1", "model.num_blocks to be a positive"),
    ("trainer.epochs=0", "trainer.epochs to be a positive"),
    ("trainer.batch_size=-8", "trainer.batch_size to be a positive"),
    ("model.attention_dropout=1.0", r"model.attention_dropout in \[0, 1\)"),
    ("model.mlp_dropout=-0.1", r"model.mlp_dropout in \[0, 1\)"),
    ("data.validation_split=1.5", r"data.validation_split in \[0, 1\)"),
    ("model.attention=linear", "model.attention='linear'. Valid values: external, self"),
    ("model.implementation=fused", "model.implementation='fused'. Valid values: auto, reference"),
    ("optimizer.name=rmsprop", "optimizer.name='rmsprop'. Valid values: adam, adamw, sgd"),
    ("data.name=imagenet", "data.name='imagenet'. Valid values: cifar100, synthetic"),
    ("optimizer.learning_rate=0", "optimizer.learning_rate > 0"),
])
def test_impossible_values_fail_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([override]))


@pytest.mark.parametrize("override, key, valid", [
    ("+model.foo=1", "model.foo", "under model: attention, attention_dropout"),
    ("+trainer.bar=2", "trainer.bar", "under trainer: batch_size, distribution"),
    ("+data.augmentation.blur=0.5", "data.augmentation.blur", "under data.augmentation: contrast"),
    ("+foo=1", "foo", "Valid keys: data, library_logs, model, optimizer, plan, quiet, seed, sweep, tracking, trainer"),
])
def test_unknown_key_added_with_plus_is_refused_with_the_key_named(override, key, valid):
    cfg = compose_config([override])  # Hydra lets `+` add a key anywhere ...
    with pytest.raises(ConfigError, match=rf"^Unknown key {re.escape(key)}: .*{re.escape(valid)}"):
        validate(cfg)  # ... validation refuses what the schema does not know


def test_dim_coefficient_is_not_checked_for_self_attention():
    cfg = validate(compose_config(["model=vit", "model.dim_coefficient=3"]))
    assert cfg.model.attention == "self"


def test_local_data_path_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EANET_DATA", "/data/cifar100.npz")
    assert validate(compose_config()).data.path == "/data/cifar100.npz"
    monkeypatch.delenv("EANET_DATA")
    assert validate(compose_config()).data.path is None


def test_config_module_imports_nothing_of_eanet():
    """eanet.config is a leaf of eanet's import graph: what it needs from other modules (registry
    names, the backend) is passed in by eanet.validation."""
    import ast

    import eanet.config

    tree = ast.parse(open(eanet.config.__file__).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] == "eanet"}, imported
    assert {"hydra.core.config_store", "omegaconf"} <= imported  # the walk sees its imports


def test_check_choice_names_the_setting_and_the_valid_values():
    from eanet.config import check_choice

    check_choice("data.name", "cifar100", {"synthetic": 1, "cifar100": 2})
    with pytest.raises(ConfigError, match=r"^Unknown data\.name='imagenet'\. "
                                          r"Valid values: cifar100, synthetic$"):
        check_choice("data.name", "imagenet", {"synthetic": 1, "cifar100": 2})


def test_a_new_attention_names_its_layer():
    with pytest.raises(ConfigError, match=r"model\.attention_layer\._target_"):
        validate(compose_config(["model.attention=linear", "model.attention_layer={rank:4}"]))
    cfg = validate(compose_config(["model.attention=linear",
                                   "model.attention_layer={_target_:my.Attention,rank:4}"]))
    assert cfg.model.attention_layer == {"_target_": "my.Attention", "rank": 4}
