"""One training run is one MLflow run, opened and closed here.

Layers, data and the training procedure never call MLflow; `train` uses `TrackedRun` (a context
manager that ends the run as FINISHED, FAILED or KILLED) and its Keras callback. What a run holds:

- params: the whole resolved config, flattened (`model.patch_size`, `optimizer.learning_rate`, …);
- metrics per epoch (step = epoch, from 0): loss, top1, top5, val_loss, val_top1, val_top5,
  learning_rate, epoch_time_s;
- metrics at the end: test_loss, test_top1, test_top5, best_val_top1, train_time_s,
  throughput_img_per_s, peak_rss_mb (and peak_gpu_mb) over fit and evaluation,
  param_count_{total,trainable,patch_embedding,attention,mlp,norm,head}, and
  flops_per_image, flops_attention_per_image (forward, eanet.models.flops);
- system metrics: MLflow's sampling of the training process (system/cpu_utilization_percentage,
  system/system_memory_usage_megabytes, GPU ones where there is one), every
  tracking.system_metrics_interval_s seconds while the run is active here;
- artifacts: config.yaml (resolved), hydra/ (Hydra's .hydra folder), history.csv,
  learning_curves.png;
- inputs and model: the data splits as MLflow datasets, the model as an MLflow Keras model, its
  `.keras` file inside (eanet.tracking.lineage);
- tags: eanet.run_type=train, eanet.model, eanet.backend (the Keras backend), eanet.overrides,
  eanet.sweep_id, eanet.job_num, mlflow.source.git.commit (eanet.tracking.opening);
  eanet.matmul_precision.effective (what the float32 matmuls did: eanet.training.precision).
"""
from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from pathlib import Path

import keras
from omegaconf import DictConfig, OmegaConf

from eanet.config import Config, run_name
from eanet.tracking.opening import hydra_context, open_run
from eanet.tracking.tags import TAG_ERROR, TAG_PRUNED, TAG_RESUMED
from eanet.training.checkpoint import TrainingCheckpoint

log = logging.getLogger(__name__)


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics, as its checkpoint recorded them (`TrainingCheckpoint`, before
    this callback in `fit`'s list), to the run, one step per epoch."""

    def __init__(self, run: TrackedRun, checkpoint: TrainingCheckpoint):
        super().__init__()
        self.run = run
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        self.run.mlflow().log_metrics(self.checkpoint.epoch_metrics[epoch], step=epoch)


class TrackedRun:
    """`with TrackedRun(cfg, raw_cfg) as run:` — one MLflow run, ended in every case.

    FINISHED when the block completes, KILLED on Ctrl-C or when a tuning sweep's pruner stops it
    (tagged eanet.pruned=true), FAILED on any other exception (with the error as the
    `eanet.error` tag and the traceback as `error.txt`).
    """

    def __init__(self, cfg: Config, raw_cfg: DictConfig, run_id: str | None = None,
                 tags: dict[str, str] | None = None):
        self.cfg = cfg
        self.raw_cfg = raw_cfg
        self.context = hydra_context()
        self.resume_run_id = run_id  # continue this (interrupted) run instead of starting one
        self.extra_tags = tags or {}
        self._run_id: str | None = None

    def __enter__(self) -> TrackedRun:
        self._run_id = open_run(self.cfg, self.raw_cfg, self.resume_run_id, self.extra_tags,
                                system_metrics=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        mlflow = self.mlflow()
        if exc_type is None:
            mlflow.end_run("FINISHED")
            return False
        pruned = _pruned(exc_type)
        status = "KILLED" if pruned or issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            if pruned:  # a tuning trial stopped by its pruner (eanet.sweeps.trial)
                mlflow.set_tag(TAG_PRUNED, "true")
            mlflow.set_tag(TAG_ERROR, f"{exc_type.__name__}: {exc}"[:5000])
            mlflow.log_text("".join(traceback.format_exception(exc_type, exc, tb)), "error.txt")
        finally:
            mlflow.end_run(status)
        log.log(logging.INFO if pruned else logging.ERROR, "MLflow run %s ended %s: %s",
                self.run_id, status, exc)
        return False

    def mlflow(self):
        """The `mlflow` module, this run active in it."""
        import mlflow

        return mlflow

    @property
    def run_id(self) -> str:
        return self._run_id

    def epoch_logger(self, checkpoint: TrainingCheckpoint) -> keras.callbacks.Callback:
        return EpochLogger(self, checkpoint)

    def sync_epoch_metrics(self, epoch_metrics: list[dict[str, float]]) -> None:
        """Log the checkpointed epochs that MLflow lacks (never one twice).

        An interruption between writing an epoch's checkpoint and logging its metrics leaves such
        a gap; a resumed run fills it before training on.
        """
        if not epoch_metrics:
            return
        mlflow = self.mlflow()
        from mlflow.tracking import MlflowClient

        logged = {m.step for m in MlflowClient().get_metric_history(self.run_id, "loss")}
        for epoch, metrics in enumerate(epoch_metrics):
            if epoch not in logged:
                mlflow.log_metrics(metrics, step=epoch)
        mlflow.set_tag(TAG_RESUMED, str(len(epoch_metrics)))

    def log_parameter_counts(self, counts: dict[str, int]) -> None:
        self.mlflow().log_metrics({f"param_count_{k}": v for k, v in counts.items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow().set_tags(tags)

    def log_results(self, results: dict[str, float]) -> None:
        self.mlflow().log_metrics(results)

    def log_artifacts(self, history: dict[str, list[float]]) -> None:
        """Resolved config, Hydra's .hydra folder, history CSV and curves (the model is logged
        once, as an MLflow model: eanet.tracking.lineage)."""
        import pandas as pd

        mlflow = self.mlflow()
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


def _pruned(exc_type: type) -> bool:
    """Whether the run was stopped by a tuning sweep's pruner (`optuna.TrialPruned`; only a
    process that imported Optuna can raise it)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and issubclass(exc_type, optuna.TrialPruned)


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
