"""The models: EANet's and ViT's layers (`layers`), their attentions as functions with a reference
and faster implementations (`attention`), the CPU speed kernels those use (`kernels`), and the
assembly of a classifier from the config (`model`).

`ATTENTION_TYPES` is the registry behind `model.attention`. Its entries are import paths,
resolved only when a model is built (eanet.plugins): the config is validated against the
registry's names without importing Keras. An attention outside eanet needs no entry here: its
own YAML names its layer (`attention_layer: {_target_: …}`, docs/extending.md).
"""
# model.attention → "module.function" building one block's attention layer from (ModelConfig, name)
ATTENTION_TYPES: dict[str, str] = {
    "external": "eanet.models.model.external_attention",
    "self": "eanet.models.model.self_attention",
}

# model.implementation: "auto", the fastest implementation of each computation for the backend
# (fused CPU kernels, folded projections), or "reference", the paper's formulas in plain keras.ops
# and Keras' own layers on every backend (eanet.models.attention).
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "reference")
