"""Sweeps: what makes `python -m eanet.run -m …` lose nothing and say what it did.

- `plan`: each configuration's fingerprint, and the skip / resume / new decision of each job;
  with plan=true, every job's status, size and estimated time before anything runs (`estimate`);
- `parent`: the sweep as one parent MLflow run, its jobs' runs nested under it, its progress;
- `budget`: sweep.max_runs and sweep.max_hours, the places a launch's jobs take;
- `callbacks`: the Hydra callbacks of conf/config.yaml — the plan, checking what every job shares
  before the first starts, progress lines, the report and the best model's registration at the
  end, and the summary of what every job did;
- `tune`, `study`, `trial`: hydra/sweeper=tune, eanet's Optuna sweeper.
"""
