"""eanet: external attention (EANet) vs self-attention (ViT) on CIFAR-100, with Hydra, Keras 3
and MLflow.

Importing the package turns on TensorFlow's oneDNN CPU kernels unless the user chose otherwise
(`TF_ENABLE_ONEDNN_OPTS=0`). TensorFlow enables them by default only on CPUs with AVX-512
VNNI/BF16 or AMX; on AVX2-only CPUs its default kernels run our training step slower
(docs/performance.md). The variable is read when TensorFlow is imported, so this must run before
any `import tensorflow` / `import keras` — hence here, and hence no effect in a process that
imported TensorFlow before eanet.

Importing the package loads neither Keras nor TensorFlow: a run's config is checked first
(eanet.run). A saved model loads after `import eanet.saving`, which imports the modules that
define eanet's Keras classes.
"""
import os

ONEDNN_CHOSEN_BY_USER = "TF_ENABLE_ONEDNN_OPTS" in os.environ
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# Keras' default backend is TensorFlow; where only JAX is installed, choose JAX (eanet.backend).
from eanet.backend import choose_backend  # noqa: E402

choose_backend()

