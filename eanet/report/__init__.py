"""Sweep reports: `python -m eanet.report` (eanet.report.cli) turns a sweep's MLflow runs into the
pandas tables of `tables` (one row per configuration, EANet against ViT) and the CSV, Markdown and
PNG files of `files`.
"""
