"""The tags eanet writes on MLflow runs: one list, read by training, sweeps and reports.

Plain strings, so the report (and anything else that only reads runs) needs neither MLflow's
tracking code nor Keras to know them.
"""
# RUN_TYPE_TRAIN for a training run, RUN_TYPE_REPORT for a report, RUN_TYPE_SWEEP for a sweep's
# parent run (eanet.tracking.sweep_run)
TAG_RUN_TYPE = "eanet.run_type"
RUN_TYPE_TRAIN, RUN_TYPE_REPORT, RUN_TYPE_SWEEP = "train", "report", "sweep"
TAG_MODEL = "eanet.model"  # model.name
TAG_OVERRIDES = "eanet.overrides"  # the job's Hydra overrides, space-separated
TAG_SWEEP = "eanet.sweep_id"  # hydra.sweep.dir of the sweep the run belongs to
TAG_JOB_NUM = "eanet.job_num"
TAG_ERROR = "eanet.error"  # why a FAILED or KILLED run ended
TAG_BACKEND = "eanet.backend"  # the Keras backend that trained the run: tensorflow, jax, ...
TAG_ONEDNN = "eanet.onednn"  # TF_ENABLE_ONEDNN_OPTS as the run saw it: CPU kernels differ in speed
# What the run's float32 matmuls really did (eanet.training.precision's probe): float32,
# tensorfloat32 or bfloat16, whatever trainer.matmul_precision asked for.
TAG_MATMUL_PRECISION = "eanet.matmul_precision.effective"
# How each piece of the model computed (eanet.models.speed.SpeedPaths): eanet.implementation.attention,
# .dropout, .norm, .gelu, .optimizer = reference, folded, fused, keras or plug-in.
TAG_IMPLEMENTATION_PREFIX = "eanet.implementation."
TAG_PACKAGES = "eanet.packages"  # "name==version …": Python and every distribution the run imports
TAG_GIT_DIRTY = "eanet.git_dirty"  # "true": eanet's tracked files differed from its git commit
TAG_FINGERPRINT = "eanet.fingerprint"  # what the configuration computes (eanet.sweeps.plan)
TAG_RESUMED = "eanet.resumed_at_epoch"
TAG_MODEL_URI = "eanet.model_uri"  # models:/<model id> of the run's MLflow model
TAG_REPLICAS = "eanet.replicas"
TAG_RUN_ID = "eanet.run_id"  # on a registered model version: the run it came from
TAG_PRUNED = "eanet.pruned"  # "true" on a tuning trial's run its pruner stopped (ended KILLED)
TAG_STUDY = "eanet.study"  # a tuning trial's Optuna study (eanet.sweeps.tune)
TAG_TRIAL = "eanet.trial"  # its trial number in that study
RUN_TYPE_TUNING = "tuning"  # the parent run of a tuning sweep's trials (eanet.tracking.search)
TAG_TUNING = "eanet.tuning"  # on that parent: the names of its studies, which identify it
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent
TAG_RUN_NAME = "mlflow.runName"  # MLflow's own: the run's name (a tuning trial's: <study>-t<trial>)
TAG_SWEEP_KEY = "eanet.sweep_key"  # on a sweep run: what the sweep computes (eanet.sweeps.parent)
TAG_PROGRESS = "eanet.progress"  # on a sweep run: "3 of 8 done | 1 failed | 2 running | ETA …"
TAG_NOT_STARTED = "eanet.not_started"  # on a sweep run: the jobs a budget kept from starting
# Settings the run's model, optimizer and data do not read, comma-separated (eanet.sweeps.identity):
# the report leaves them out of a run's configuration.
TAG_IGNORED = "eanet.ignored_settings"
TAG_LEGACY_FINGERPRINT = "eanet.fingerprint.legacy"  # a run found again under its earlier identity
RUN_TYPE_LEDGER = "ledger"  # the run holding an experiment's claims (eanet.tracking.ledger)
TAG_LEDGER = "eanet.ledger"  # on an experiment: its ledger run's id
# On a sweep run: its record (eanet.tracking.record): one tag per job, and the current launch.
TAG_JOB_PREFIX = "eanet.job."
TAG_LAUNCH = "eanet.launch"
# What a run's flops_per_image leaves out, where its model has layers it could not count
# (eanet.models.flops)
TAG_FLOPS_UNCOUNTED = "eanet.flops_uncounted"
