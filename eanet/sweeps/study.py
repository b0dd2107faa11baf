"""What a tuning study is (eanet.sweeps.tune runs them; eanet.sweeps.trial reports to them):

- its search space: `hydra.sweeper.params` in Hydra's sweep grammar → Optuna distributions
  (`interval` uniform, `tag(log, interval)` log-uniform, `range`, `choice`), as
  hydra-optuna-sweeper maps them;
- its pruner and sampler, from registries (an unknown kind lists the valid ones); the pruner's
  settings are stored in the study, so that a trial's process rebuilds it (`load_pruner`);
- its storage: `optuna.db` beside a local SQLite MLflow store unless `hydra.sweeper.storage` says;
- what counts towards its budget (`Study.counted`): finished, pruned and failed trials, but not
  trials a killed sweep left running (marked `interrupted` and asked again).

Imports neither Optuna nor Keras at module level: Hydra's plugin scan imports this at start-up.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (ChoiceSweep, IntervalSweep, Override, RangeSweep,
                                              Transformer)

from eanet.config import ConfigError, check_choice

TRIAL_ENV = "EANET_TUNE_TRIAL"  # a trial's job: {"storage": url, "study": name, "trial_id": int}
RUN_ID_ATTR = "mlflow_run_id"  # the trial's user attribute naming its MLflow run
INTERRUPTED_ATTR = "interrupted"  # on a trial failed because its sweep died: asked again
PRUNER_ATTR = "pruner"  # the study's user attribute: the pruner's settings (load_pruner)
DIRECTIONS = ("maximize", "minimize")


def pruners() -> dict[str, Any]:
    import optuna

    return {"median": optuna.pruners.MedianPruner,
            "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
            "none": optuna.pruners.NopPruner}


def build(registry: dict[str, Any], spec: Mapping[str, Any], setting: str) -> Any:
    """`registry[spec.kind](**rest of spec)`; an unknown kind or argument names the setting."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    check_choice(f"{setting}.kind", kind, registry)
    try:
        return registry[kind](**spec)
    except TypeError as error:
        raise ConfigError(f"{setting} ({kind}): {error}") from None


def load_pruner(study) -> Any:
    """The pruner the sweeper configured, rebuilt from the study (what a trial's process needs)."""
    return build(pruners(), study.user_attrs.get(PRUNER_ATTR, {"kind": "none"}),
                 "hydra.sweeper.pruner")


def samplers() -> dict[str, Any]:
    import optuna

    return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}


def distribution(override: Override) -> Any:
    """The Optuna distribution of one search-space entry (as hydra-optuna-sweeper maps them)."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(f"hydra.sweeper.params.{override.key_or_group}={override.input_line}: not a "
                      "range: use interval(a, b), tag(log, interval(a, b)), range(…) or choice(…)")


def search_space(params: Mapping[str, Any]) -> dict[str, Any]:
    """`hydra.sweeper.params` → {key: Optuna distribution}."""
    parser = OverridesParser.create()
    space = {}
    for key, value in params.items():
        text = str(value)
        try:
            (override,) = parser.parse_overrides([f"x={text}"])
        except Exception as error:  # noqa: BLE001 - Hydra's grammar errors, reworded
            raise ConfigError(f"hydra.sweeper.params.{key}={text}: {error}") from None
        space[key] = distribution(override)
    return space


def override_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def study_storage(storage: Optional[str], tracking_uri: Optional[str]) -> str:
    """The study's database: `storage`, else optuna.db beside a local SQLite MLflow store."""
    from eanet.tracking.store import resolved_uri, sqlite_path

    if storage:
        return storage
    database = sqlite_path(tracking_uri)
    if database is None:
        raise ConfigError(f"hydra.sweeper.storage is required with the tracking store "
                          f"{resolved_uri(tracking_uri)} (not a local SQLite file): name the "
                          "database the studies live in, e.g. the server's backend store "
                          "(postgresql://…) or sqlite:////path/optuna.db")
    return f"sqlite:///{database.with_name('optuna.db')}"


@dataclass
class Study:
    """One Optuna study of the sweep and the overrides that define it."""
    name: str
    own: list[str]  # one value of each study axis (model=ea): what sets it apart
    overrides: list[str]  # those, then the fixed overrides: what every trial of it gets
    study: Any  # optuna.Study

    def counted(self) -> int:
        """Trials that used the budget: complete, pruned, or failed on their own."""
        from optuna.trial import TrialState

        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR))
                   for t in self.study.get_trials(deepcopy=False))
