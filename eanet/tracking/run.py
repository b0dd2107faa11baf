"""One training run is one MLflow run, opened and closed here.

Layers, data and the training procedure never call MLflow; `train` uses `TrackedRun` (a context
manager that ends the run as FINISHED, FAILED or KILLED) and its Keras callback. What a run holds:

- params: the whole resolved config, flattened (`model.patch_size`, `optimizer.learning_rate`, …);
- metrics per epoch (step = epoch, from 0): loss, top1, top5, val_loss, val_top1, val_top5,
  learning_rate, epoch_time_s;
- metrics at the end: test_loss, test_top1, test_top5, best_val_top1, train_time_s,
  throughput_img_per_s, and param_count_{total,trainable,patch_embedding,attention,mlp,norm,head};
- artifacts: config.yaml (resolved), hydra/ (Hydra's .hydra folder), model/model.keras,
  history.csv, learning_curves.png;
- tags: eanet.run_type=train, eanet.model, eanet.backend (the Keras backend), eanet.overrides,
  eanet.sweep_id, eanet.job_num, mlflow.source.git.commit.
"""
from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import keras
import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from eanet.config import Config, flatten, run_name
from eanet.tracking.store import experiment_id
from eanet.tracking.tags import (RUN_TYPE_TRAIN, TAG_BACKEND, TAG_ERROR, TAG_JOB_NUM, TAG_MODEL,
                                 TAG_ONEDNN, TAG_OVERRIDES, TAG_RESUMED, TAG_RUN_TYPE, TAG_SWEEP)
from eanet.training.checkpoint import epoch_metrics

log = logging.getLogger(__name__)


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


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


class EpochLogger(keras.callbacks.Callback):
    """Logs `epoch_metrics` to the active MLflow run, one step per epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        mlflow.log_metrics(epoch_metrics(self.model, logs, self.epoch_start), step=epoch)


class TrackedRun:
    """`with TrackedRun(cfg, raw_cfg) as run:` — one MLflow run, ended in every case.

    FINISHED when the block completes, KILLED on Ctrl-C, FAILED on any other exception (with the
    error as the `eanet.error` tag and the traceback as `error.txt`).
    """

    def __init__(self, cfg: Config, raw_cfg: DictConfig, run_id: Optional[str] = None,
                 tags: Optional[dict[str, str]] = None):
        self.cfg = cfg
        self.raw_cfg = raw_cfg
        self.context = hydra_context()
        self.run = None
        self.resume_run_id = run_id  # continue this (interrupted) run instead of starting one
        self.extra_tags = tags or {}

    def __enter__(self) -> "TrackedRun":
        exp_id = experiment_id(self.cfg.tracking.tracking_uri, self.cfg.tracking.experiment_name)
        tags = {TAG_RUN_TYPE: RUN_TYPE_TRAIN, TAG_MODEL: self.cfg.model.name,
                TAG_OVERRIDES: " ".join(self.context.get("overrides", [])),
                TAG_BACKEND: keras.backend.backend(),
                TAG_ONEDNN: os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")}
        if "sweep_id" in self.context:
            tags[TAG_SWEEP] = self.context["sweep_id"]
            tags[TAG_JOB_NUM] = str(self.context["job_num"])
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        tags.update(self.extra_tags)
        if self.resume_run_id:
            # Its params are recorded already; an earlier failure's error no longer applies.
            self.run = mlflow.start_run(run_id=self.resume_run_id, tags=tags)
            if TAG_ERROR in self.run.data.tags:
                MlflowClient().delete_tag(self.resume_run_id, TAG_ERROR)
            return self
        self.run = mlflow.start_run(experiment_id=exp_id, run_name=run_name(self.cfg), tags=tags)
        params = flatten(OmegaConf.to_container(self.raw_cfg, resolve=True))
        mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})
        log.info("MLflow run %s (%s) in %s", self.run.info.run_id, run_name(self.cfg),
                 mlflow.get_tracking_uri())
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            mlflow.end_run("FINISHED")
            return False
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            mlflow.set_tag(TAG_ERROR, f"{exc_type.__name__}: {exc}"[:5000])
            mlflow.log_text("".join(traceback.format_exception(exc_type, exc, tb)), "error.txt")
        finally:
            mlflow.end_run(status)
        log.error("MLflow run %s ended %s: %s", self.run.info.run_id, status, exc)
        return False

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def epoch_logger(self) -> keras.callbacks.Callback:
        return EpochLogger()

    def sync_epoch_metrics(self, epoch_metrics: list[dict[str, float]]) -> None:
        """Log the checkpointed epochs that MLflow lacks (never one twice).

        An interruption between writing an epoch's checkpoint and logging its metrics leaves such
        a gap; a resumed run fills it before training on.
        """
        logged = {m.step for m in MlflowClient().get_metric_history(self.run_id, "loss")}
        for epoch, metrics in enumerate(epoch_metrics):
            if epoch not in logged:
                mlflow.log_metrics(metrics, step=epoch)
        if epoch_metrics:
            mlflow.set_tag(TAG_RESUMED, str(len(epoch_metrics)))

    def log_parameter_counts(self, counts: dict[str, int]) -> None:
        mlflow.log_metrics({f"param_count_{k}": v for k, v in counts.items()})

    def log_results(self, results: dict[str, float]) -> None:
        mlflow.log_metrics(results)

    def log_artifacts(self, model: keras.Model, history: dict[str, list[float]]) -> None:
        """Resolved config, Hydra's .hydra folder, the .keras model, history CSV and curves."""
        import pandas as pd

        mlflow.log_text(OmegaConf.to_yaml(self.raw_cfg, resolve=True), "config.yaml")
        hydra_dir = Path(self.context.get("output_dir", "")) / ".hydra"
        if self.context and hydra_dir.is_dir():
            mlflow.log_artifacts(str(hydra_dir), "hydra")
        with tempfile.TemporaryDirectory() as tmp:
            frame = pd.DataFrame(history)
            frame.index.name = "epoch"
            frame.to_csv(Path(tmp) / "history.csv")
            mlflow.log_artifact(str(Path(tmp) / "history.csv"))
            _plot_learning_curves(frame, Path(tmp) / "learning_curves.png", run_name(self.cfg))
            mlflow.log_artifact(str(Path(tmp) / "learning_curves.png"))
            if self.cfg.tracking.log_model:
                model.save(Path(tmp) / "model.keras")
                mlflow.log_artifact(str(Path(tmp) / "model.keras"), "model")


def _plot_learning_curves(history, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = history.index + 1
    for key, ax in (("loss", ax_loss), ("top1", ax_acc), ("top5", ax_acc)):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, marker="o", label=prefix + key)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
