"""Opening a training run's MLflow run: created with its params and tags, or an interrupted one
resumed. Neither Keras nor TensorFlow is imported here, so that a helper process can do it while
the training process imports them (`RunOpener`, used by eanet.training.startup).

What the run gets (see eanet.tracking.run for the rest of what it holds):
- params: the whole resolved config, flattened (`model.patch_size`, `optimizer.learning_rate`, …);
- tags: eanet.run_type=train, eanet.model, eanet.backend (the Keras backend), eanet.onednn,
  eanet.overrides, eanet.sweep_id, eanet.job_num, mlflow.source.git.commit, the plan's
  (eanet.fingerprint), and in a sweep mlflow.parentRunId: the sweep's run (eanet.sweeps.parent).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eanet.backend import configured_backend
from eanet.config import Config, flatten, run_name
from eanet.tracking.tags import (RUN_TYPE_TRAIN, TAG_BACKEND, TAG_ERROR, TAG_JOB_NUM, TAG_MODEL,
                                 TAG_ONEDNN, TAG_OVERRIDES, TAG_PARENT, TAG_RUN_TYPE, TAG_SWEEP)

log = logging.getLogger(__name__)


def git_commit() -> str | None:
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


def open_run(cfg: Config, raw_cfg: DictConfig, resume_run_id: str | None = None,
             extra_tags: dict[str, str] | None = None, system_metrics: bool = False) -> str:
    """Start the MLflow run of `cfg` (params and tags), or continue the interrupted
    `resume_run_id` (its tags refreshed, an earlier failure's error dropped); return its id.

    The run is RUNNING and active in this process; a helper process that opened it ends without
    ending it, and the training process continues it with `mlflow.start_run(run_id=…)`.
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
        from eanet.sweeps.parent import parent_run_id

        parent = parent_run_id(context["sweep_id"])  # the sweep's own run (eanet.sweeps.parent)
        if parent:
            tags[TAG_PARENT] = parent
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update(extra_tags or {})
    if resume_run_id:
        # Its params are recorded already; an earlier failure's error no longer applies.
        run = mlflow.start_run(run_id=resume_run_id, tags=tags,
                               log_system_metrics=system_metrics or None)
        if TAG_ERROR in run.data.tags:
            MlflowClient().delete_tag(resume_run_id, TAG_ERROR)
        return resume_run_id
    run = mlflow.start_run(experiment_id=exp_id, run_name=run_name(cfg), tags=tags,
                           log_system_metrics=system_metrics or None)
    params = flatten(OmegaConf.to_container(raw_cfg, resolve=True))
    mlflow.log_params({k: ("None" if v is None else v) for k, v in params.items()})
    log.info("MLflow run %s (%s) in %s", run.info.run_id, run_name(cfg),
             mlflow.get_tracking_uri())
    return run.info.run_id


class OpenerError(RuntimeError):
    """The helper process ended without an answer (killed, or its error could not be sent)."""


class RunOpener:
    """MLflow's start-up in a helper process, beside the training process' TensorFlow import.

    A forked child imports MLflow, opens the store and plans the run (`plan`: skip, resume or
    new; eanet.sweeps.plan), then waits; `open_run` has it open the run (`open_run` above) and
    end. The training process imports MLflow only when it next needs it (eanet.tracking.run),
    after its first training step. Importing MLflow (≈ 1.4 s) and opening a store (≈ 0.9 s; 2.2
    s to create one) are Python that holds the GIL, so only another process runs them beside
    the import of TensorFlow.

    `start` returns None where forking it is not safe or gains nothing: outside Linux, beside
    other Python threads, once Keras (TensorFlow, JAX) is loaded (a sweep's later jobs), or once
    MLflow is (a sweep's first job: its checks opened the store, whose connections a child must
    not share). The run is then planned and opened in the training process, as before.
    """

    def __init__(self, process, connection):
        self._process = process
        self._connection = connection
        self._plan = None
        self._error: BaseException | None = None  # the helper's, raised to every caller
        self._lock = threading.Lock()  # the data thread waits for the plan too

    @classmethod
    def start(cls, plan_run: Callable, cfg: Config, raw_cfg: DictConfig) -> RunOpener | None:
        """Fork the helper, which runs `plan_run(cfg, raw_cfg)` (eanet.sweeps.plan) at once."""
        if (sys.platform != "linux" or threading.active_count() > 1
                or "keras" in sys.modules or "mlflow" in sys.modules):
            return None
        context = multiprocessing.get_context("fork")
        here, there = context.Pipe()
        process = context.Process(target=_serve, args=(there, here, plan_run, cfg, raw_cfg),
                                  name="eanet-mlflow", daemon=True)
        process.start()
        there.close()
        return cls(process, here)

    def plan(self):
        """The run's plan (eanet.sweeps.plan.RunPlan), waiting for the helper if needed."""
        with self._lock:
            if self._plan is None and self._error is None:
                try:
                    self._plan = self._receive("plan")
                except BaseException as error:
                    self._error = error
                    self.close()
                    raise
                if self._plan.skip:
                    self.close()
            if self._error is not None:
                raise self._error
        return self._plan

    def open_run(self) -> str:
        """Have the helper open the planned run; its id (the helper then ends)."""
        self.plan()
        self._connection.send("open")
        try:
            return self._receive("opened")
        finally:
            self.close()

    def close(self) -> None:
        """End the helper (whatever it was doing) and reap it."""
        self._connection.close()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _receive(self, expected: str):
        try:
            kind, value = self._connection.recv()
        except (EOFError, OSError):
            raise OpenerError(f"the MLflow helper process ended without an answer (exit code "
                              f"{self._process.exitcode})") from None
        if kind == "error":
            raise value
        assert kind == expected, (kind, expected)
        return value


def _serve(connection, parents_end, plan_run: Callable, cfg: Config, raw_cfg: DictConfig) -> None:
    """The helper process: plan, then open the run when asked (an EOF: the parent gave up)."""
    parents_end.close()  # else our own copy keeps the pipe open when the parent dies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        plan = plan_run(cfg, raw_cfg)
        connection.send(("plan", plan))
        if plan.skip or connection.recv() != "open":
            return
        connection.send(("opened", open_run(cfg, raw_cfg, plan.run_id, plan.tags)))
    except EOFError:
        return
    except BaseException as error:  # noqa: BLE001 - the parent re-raises it
        try:
            connection.send(("error", error))
        except Exception:  # noqa: BLE001 - not picklable: its text then
            connection.send(("error", OpenerError(f"{type(error).__name__}: {error}")))
    finally:
        connection.close()
