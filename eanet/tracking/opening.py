"""Opening a training run's MLflow run: created with its params and tags, or an interrupted one
resumed.

What the run gets (see eanet.tracking.run for the rest of what it holds):
- params: the whole resolved config, flattened (`model.patch_size`, `optimizer.learning_rate`, …);
- tags: eanet.run_type=train, eanet.model, eanet.backend (the Keras backend), eanet.onednn,
  eanet.overrides, eanet.sweep_id, eanet.job_num, mlflow.source.git.commit with eanet.git_dirty,
  eanet.packages (Python and every distribution the run depends on, eanet.tracking.lineage), the
  plan's (eanet.fingerprint), and in a sweep mlflow.parentRunId: the sweep's run (eanet.sweeps.parent).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eanet.backend import configured_backend
from eanet.config import Config, flatten, run_name
from eanet.tracking.lineage import source_commit, stack_versions
from eanet.tracking.tags import (RUN_TYPE_TRAIN, TAG_BACKEND, TAG_ERROR, TAG_GIT_DIRTY,
                                 TAG_JOB_NUM, TAG_MODEL, TAG_ONEDNN, TAG_OVERRIDES, TAG_PACKAGES,
                                 TAG_PARENT, TAG_PRUNED, TAG_RUN_TYPE, TAG_SWEEP)

log = logging.getLogger(__name__)


def hydra_context() -> dict[str, Any]:
    """Overrides, sweep and output folder of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    context = {"overrides": list(hc.overrides.task), "output_dir": hc.runtime.output_dir}
    if hc.mode == RunMode.MULTIRUN:
        context["sweep_id"] = str(hc.sweep.dir)
        context["job_num"] = hc.job.num
    return context


# MLflow's limit on a tag's value; a longer list keeps what a result most depends on.
MAX_TAG_LENGTH = 8000
KEY_PACKAGES = {"python", "eanet", "keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib",
                "numpy", "mlflow", "hydra-core", "omegaconf", "pandas"}


def packages_tag(versions: dict[str, str]) -> str:
    """`name==version …`, every one if MLflow's limit allows, else KEY_PACKAGES' and a mark."""
    text = " ".join(f"{name}=={version}" for name, version in versions.items())
    if len(text) <= MAX_TAG_LENGTH:
        return text
    return " ".join([*(f"{name}=={version}" for name, version in versions.items()
                       if name in KEY_PACKAGES),
                     f"({len(versions)} in all)"])


def open_run(cfg: Config, raw_cfg: DictConfig, resume_run_id: str | None = None,
             extra_tags: dict[str, str] | None = None, system_metrics: bool = False) -> str:
    """Start the MLflow run of `cfg` (params and tags), or continue the interrupted
    `resume_run_id` (its tags refreshed, an earlier ending's error and pruned mark dropped: it
    counts as what it ends as now); return its id.

    The run is RUNNING and active in this process (`TrackedRun` ends it).
    `system_metrics`: sample this process' CPU, memory and GPU into the run (`system/…`
    metrics, every tracking.system_metrics_interval_s) until it ends: the training process only.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from eanet.tracking.store import experiment_id

    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(cfg.tracking.system_metrics_interval_s)

    exp_id = experiment_id(cfg.tracking.tracking_uri, cfg.tracking.experiment_name)
    context = hydra_context()
    tags = {TAG_RUN_TYPE: RUN_TYPE_TRAIN, TAG_MODEL: cfg.model.name,
            TAG_OVERRIDES: " ".join(context.get("overrides", [])),
            TAG_BACKEND: configured_backend(),  # what Keras loads (eanet.backend)
            TAG_ONEDNN: os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")}
    if "sweep_id" in context:
        tags[TAG_SWEEP] = context["sweep_id"]
        tags[TAG_JOB_NUM] = str(context["job_num"])
        from eanet.tracking.record import parent_run_id

        parent = parent_run_id(context["sweep_id"])  # the sweep's own run (eanet.sweeps.parent)
        if parent:
            tags[TAG_PARENT] = parent
    commit, dirty = source_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags[TAG_GIT_DIRTY] = str(dirty).lower()
    tags[TAG_PACKAGES] = packages_tag(stack_versions())
    tags.update(extra_tags or {})
    if resume_run_id:
        # Its params are recorded already; an earlier ending's error, or a tuning pruner's
        # mark, no longer applies (the report counts a run by how it ends now).
        run = mlflow.start_run(run_id=resume_run_id, tags=tags,
                               log_system_metrics=system_metrics or None)
        for stale in (TAG_ERROR, TAG_PRUNED):
            if stale in run.data.tags:
                MlflowClient().delete_tag(resume_run_id, stale)
        return resume_run_id
    run = mlflow.start_run(experiment_id=exp_id, run_name=run_name(cfg), tags=tags,
                           log_system_metrics=system_metrics or None)
    params = flatten(OmegaConf.to_container(raw_cfg, resolve=True))
    mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})
    log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name(cfg),
             mlflow.get_tracking_uri())
    return run.info.run_id
