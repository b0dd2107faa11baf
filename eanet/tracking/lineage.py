"""What a run consumed and produced, in the places the MLflow UI shows them.

- the data: each split as an MLflow dataset (`mlflow.log_input`, context training / validation /
  test) with its name, source and digest — the run page's "Datasets used";
- the model, stored once: an MLflow Keras model (`data/model.keras`) that carries eanet's code
  (eanet.tracking.keras_model), with a signature inferred on a few test images (the run page's
  "Logged models"); loadable with `mlflow.pyfunc.load_model(<eanet.model_uri tag>)` in any Python
  with MLflow and Keras, and what the sweep's best-model registration
  (eanet.tracking.search.register_best_model) registers;
- the devices: how many replicas trained the model (`eanet.replicas` tag, global batch param).

Called by `train` inside a `TrackedRun`, the run active (MLflow is
imported when they run, not with this module).
"""
from __future__ import annotations

import logging
from importlib import metadata
from typing import Optional

import numpy as np

from eanet.tracking.tags import TAG_MATMUL_PRECISION, TAG_MODEL_URI, TAG_REPLICAS

log = logging.getLogger(__name__)

# Where a data set's `source` (ImageDataset.source) comes from, when it is not a local path.
KNOWN_SOURCES = {"keras.datasets.cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


def log_datasets(data_name: str, source: str, splits) -> None:
    """One MLflow dataset per split: name `<data.name>/<split>`, digest of the arrays."""
    import mlflow

    for context, images, labels in (("training", splits.x_train, splits.y_train),
                                    ("validation", splits.x_val, splits.y_val),
                                    ("test", splits.x_test, splits.y_test)):
        if not len(labels):
            continue
        dataset = _numpy_dataset(images, labels, f"{data_name}/{context}",
                                 KNOWN_SOURCES.get(source, source))
        mlflow.log_input(dataset, context=context)


def _numpy_dataset(images: np.ndarray, labels: np.ndarray, name: str, source: Optional[str]):
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.data.from_numpy(images, targets=labels, name=name, source=source)
    except MlflowException:
        # A source MLflow cannot resolve (e.g. "synthetic"): it records the code that made it.
        return mlflow.data.from_numpy(images, targets=labels, name=name)


def _requirements() -> list[str]:
    """Pinned requirements of the logged model: Keras, its backend, and hydra-core, which the
    model's copy of eanet's code imports to load (eanet.training.optimization). Given
    explicitly: MLflow's own inference would load the model in a subprocess to find them."""
    pins = []
    for package in ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "hydra-core"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return pins


def log_model_with_signature(model, sample_images: np.ndarray) -> str:
    """Log `model` as an MLflow Keras model carrying eanet's code (eanet.tracking.keras_model),
    whose signature is inferred on `sample_images` (float32, (n, H, W, 3), as the input pipeline
    feeds it). Returns its `models:/` URI."""
    import mlflow
    from mlflow.models import Model, infer_signature

    from eanet.tracking import keras_model

    sample = sample_images.astype(np.float32)
    signature = infer_signature(sample, model.predict(sample, verbose=0))
    info = Model.log(artifact_path=None, name=mlflow.active_run().info.run_name,
                     flavor=keras_model, flavor_name=keras_model.FLAVOR_NAME, model=model,
                     signature=signature, pip_requirements=_requirements())
    mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    return info.model_uri


def log_replicas(replicas: int, global_batch_size: int) -> None:
    import mlflow

    mlflow.set_tag(TAG_REPLICAS, str(replicas))
    mlflow.log_param("trainer.global_batch_size", global_batch_size)


def log_matmul_precision(effective: str) -> None:
    import mlflow

    mlflow.set_tag(TAG_MATMUL_PRECISION, effective)
