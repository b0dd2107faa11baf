"""What a run consumed and produced, in the places the MLflow UI shows them.

- the data: each split as an MLflow dataset (`mlflow.log_input`, context training / validation /
  test) with its name, source and digest — the run page's "Datasets used";
- the model, stored once: an MLflow Keras model (`data/model.keras`) that carries eanet's code
  (eanet.tracking.keras_model), with a signature inferred on a few test images (the run page's
  "Logged models"); loadable with `mlflow.pyfunc.load_model(<eanet.model_uri tag>)` in any Python
  with MLflow and Keras, and what the sweep's best-model registration
  (eanet.tracking.search.register_best_model) registers;
- the devices: how many replicas trained the model (`eanet.replicas` tag, global batch param);
- the software: `stack_versions`, every installed distribution the result depends on (the
  closure of eanet's requirements: Keras, the backend, NumPy, MLflow, Hydra, pandas, … and theirs)
  and `source_commit`, eanet's git commit and whether its tree had uncommitted changes. A run's
  tags (eanet.tracking.opening) and a study's record.json (eanet.report.record) hold both.

Called by `train` inside a `TrackedRun`, the run active (MLflow is
imported when they run, not with this module).
"""
from __future__ import annotations

import logging
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from eanet.tracking.tags import (TAG_IMPLEMENTATION_PREFIX, TAG_MATMUL_PRECISION, TAG_MODEL_URI,
                                 TAG_REPLICAS)

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


# What eanet's requirements are, where eanet runs from a checkout without being installed.
CORE_REQUIREMENTS = ("keras", "hydra-core", "omegaconf", "mlflow", "pandas", "matplotlib", "numpy",
                     "scipy", "tensorflow", "tensorflow-cpu", "jax", "jaxlib")
# eanet's extras that no run imports: the test tools.
NOT_RUN_EXTRAS = {"test"}


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """{name: version} of those of `names` that are installed."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def stack_versions() -> dict[str, str]:
    """{distribution: version} of Python and of every installed distribution a run depends on:
    eanet, its requirements (those of its installed extras too, the test tools aside) and
    theirs, transitively, as their metadata declare them for this interpreter."""
    try:
        extras = set(metadata.metadata("eanet").get_all("Provides-Extra") or []) - NOT_RUN_EXTRAS
        pending = [("eanet", frozenset(extras))]
    except metadata.PackageNotFoundError:  # run from a checkout
        pending = [(name, frozenset()) for name in CORE_REQUIREMENTS]
    found = {"python": platform.python_version()}
    seen = set()
    while pending:
        name, extras = pending.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # an extra that is not installed, another OS' …
            continue
        found[canonicalize_name(name)] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                                 for extra in {"", *extras}):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return dict(sorted(found.items()))


def source_commit(where: Path = Path(__file__).parent) -> tuple[Optional[str], bool]:
    """eanet's git commit (None outside a git checkout) and whether tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None, False
    return commit, bool(status.stdout.strip())


def _requirements() -> list[str]:
    """Pinned requirements of the logged model: Keras and its backend (the model's copy of
    eanet's code needs nothing else to load: eanet.saving). Given explicitly: MLflow's own
    inference would load the model in a subprocess to find them."""
    versions = installed_versions(("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib"))
    return [f"{name}=={version}" for name, version in versions.items()]


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


def log_speed_paths(paths: dict[str, str]) -> None:
    """How each piece of the model computed (eanet.models.speed): eanet.implementation.<piece>."""
    import mlflow

    mlflow.set_tags({f"{TAG_IMPLEMENTATION_PREFIX}{piece}": path for piece, path in paths.items()})
