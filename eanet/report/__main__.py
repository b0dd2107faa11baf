"""`python -m eanet.report`: the command line of eanet.report.cli (usage there and in conf/report.yaml).

The Hydra entry point lives in this `__main__` module so that Hydra finds `conf/` beside the
package by file path, as for `python -m eanet.run`.
"""
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from eanet.report.cli import Report, ReportConfig, ReportError, sweep_report
from eanet.report.files import display_table


@hydra.main(version_base="1.3", config_path="../../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    typed: ReportConfig = OmegaConf.to_object(cfg)
    try:
        report = sweep_report(typed)
    except ReportError as error:
        sys.exit(f"eanet.report: {error}")
    print_report(report)


def print_report(report: Report) -> None:
    """What was read, the tables, the verdicts and where the files went."""
    print(f"{len(report.runs)} training runs read: {'; '.join(report.sources).replace('`', '')}")
    print(f"swept settings: {', '.join(report.axes) or 'none (model only)'}")
    print(display_table(report.table).to_string(index=False))
    if not report.comparison.empty:
        print()
        print(display_table(report.comparison).to_string(index=False))
    if report.verdicts:
        print("\nverdict:\n" + "\n".join(f"  {line}" for line in report.verdicts))
    print(f"\nreport written to {report.out}/"
          + (f", logged to MLflow run {report.run_id}" if report.run_id else ""))


if __name__ == "__main__":
    main()
