"""Sweeps: what makes `python -m eanet.run -m …` lose nothing and say what it did.

- `plan`: each configuration's fingerprint, and the skip / resume / new decision of each job;
- `callbacks`: the Hydra callbacks of conf/config.yaml — checking what every job shares before
  the first starts, progress lines, the report and the best model's registration at the end,
  and the summary of what every job did.
"""
