"""Everything MLflow, and only here: no module outside `eanet.tracking` imports mlflow.

- `tags`: the names of the tags eanet writes (importable without MLflow or Keras);
- `store`: which store (URI, SQLite file), its lock, its write check, the experiment lookup;
- `opening`: a training run's MLflow run created or resumed, with its params and tags;
- `run`: one training run as one MLflow run (`TrackedRun`) and its per-epoch Keras logger;
- `lineage`: the data sets, the MLflow model and the devices a run used;
- `keras_model`: that MLflow model, MLflow's Keras flavor carrying eanet's code, so that it loads
  where eanet was never imported;
- `sweep_run`: a sweep's parent run (its jobs' runs nested under it), its progress and its end;
- `search`: the queries of sweeps and reports (runs by fingerprint, by sweep, the latest sweep),
  the report run, and the registration of a sweep's best model.
"""


class StoreError(RuntimeError):
    """A store that cannot be used as asked (unwritable, unreachable, missing, an unknown
    experiment, a rejected search); the message names the setting and what to do."""
