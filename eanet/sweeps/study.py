"""What a tuning study is (eanet.sweeps.tune runs them; eanet.sweeps.trial reports to them):

- its search space: `hydra.sweeper.params` in Hydra's sweep grammar → Optuna distributions
  (`interval` uniform, `tag(log, interval)` log-uniform, `range`, `choice`), as
  hydra-optuna-sweeper maps them;
- its own overrides: one value of each study axis (`study_axes`, `axis_combinations`);
- its pruner and sampler, from registries (an unknown kind lists the valid ones); the pruner's
  settings are stored in the study, so that a trial's process rebuilds it (`load_pruner`); the
  sampler's seed moves on with each relaunch (`sampler`);
- its storage: `optuna.db` beside a local SQLite MLflow store unless `hydra.sweeper.storage` says;
- its name (`study_name`): `tune-<study overrides>-<8 hex>`, the hex from the key a sweep's parent
  run has (eanet.sweeps.parent.sweep_key) over what the study searches: its overrides, its space
  and direction, its experiment. Budgets (`sweep.*`), `n_trials`, `n_jobs`, where results go and
  how much is printed are not in it: relaunching with a budget, or with more trials, continues it;
- how each trial ended (`TrialOutcome`) and what counts towards `n_trials` (`Study.counted`):
  complete, pruned and failed trials, never those its sweep ended (killed mid-trial, or kept from
  starting by a budget: marked `interrupted` and asked again with the same settings, `requeue`).

Imports neither Optuna nor Keras at module level: Hydra's plugin scan imports this at start-up.
"""
from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (ChoiceSweep, IntervalSweep, Override, RangeSweep,
                                              Transformer)

from eanet.config import ConfigError, check_choice

log = logging.getLogger("eanet.tune")

TRIAL_ENV = "EANET_TUNE_TRIAL"  # a trial's job: {"storage": url, "study": name, "trial_id": int}
RUN_ID_ATTR = "mlflow_run_id"  # the trial's user attribute naming its MLflow run
INTERRUPTED_ATTR = "interrupted"  # on a trial its sweep ended, not its settings: asked again
RESUMES_ATTR = "resumes_trial"  # on the trial asked again: the number of the one it replaces
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


def sampler(spec: Mapping[str, Any], trials: int) -> Any:
    """The configured sampler; its seed moved on by the `trials` the study holds, so that a
    relaunch draws new settings instead of the first launch's again (a new study: the seed as
    configured)."""
    spec = dict(spec)
    if spec.get("seed") is not None:
        spec["seed"] = int(spec["seed"]) + trials
    return build(samplers(), spec, "hydra.sweeper.sampler")


def study_axes(arguments: list[str]) -> tuple[list[list[str]], list[str]]:
    """Choice lists (`model=ea,vit`: one study per value) and fixed overrides (every trial)."""
    parsed = OverridesParser.create().parse_overrides(arguments)
    axes, fixed = {}, {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_discrete_sweep():
            fixed.pop(key, None)
            axes[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        elif override.is_sweep_override():
            raise ConfigError(f"{override.input_line}: only choice lists (a,b) split a tuning "
                              "sweep into studies; put ranges in hydra.sweeper.params")
        else:
            axes.pop(key, None)
            fixed[key] = override.input_line
    return list(axes.values()), list(fixed.values())


def axis_combinations(axes: list[list[str]]) -> list[list[str]]:
    """Each study's own overrides: one value of every axis."""
    import itertools

    return [list(c) for c in itertools.product(*axes)] if axes else [[]]


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


def study_name(config: Any, own: list[str], fixed: list[str]) -> str:
    """`tune-model=ea-1a2b3c4d`: the study's own overrides (its value of each study axis), then 8
    hex digits of `sweep_key` over the study's definition alone (see the module's docstring)."""
    from omegaconf import OmegaConf, open_dict

    from eanet.sweeps.parent import sweep_key

    definition = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    with open_dict(definition):
        sweeper = definition.hydra.sweeper
        definition.hydra.sweeper = {"_target_": sweeper.get("_target_"),
                                    "params": sweeper.get("params"),
                                    "direction": sweeper.get("direction")}
        definition.hydra.overrides.task = [*own, *fixed]
    words = [re.sub(r"[^\w.=+-]", "_", o.lstrip("+~")) for o in own]
    return "-".join(["tune", *words, sweep_key(definition)[:8]])


def legacy_study_name(own: list[str], fixed: list[str], space: dict[str, Any], direction: str,
                      experiment: str) -> str:
    """The name studies had before `study_name` (its hash covered every fixed override, budgets
    included): a study of that name in the storage is continued under it."""
    import hashlib
    import json

    definition = {"space": {k: repr(v) for k, v in space.items()}, "fixed": sorted(fixed),
                  "own": own, "direction": direction, "experiment": experiment}
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:8]
    return "-".join(["tune", *own, digest])


class TrialOutcome(enum.Enum):
    """How a trial of a study ended, read from Optuna's state and the trial's marks."""
    COMPLETE = "complete"  # a value: its run's best validation top-1
    PRUNED = "pruned"  # stopped by the study's pruner
    FAILED = "failed"  # on its own settings: diverged (NonFiniteLossError) or crashed
    INTERRUPTED = "interrupted"  # ended by its sweep (killed, or a budget): asked again
    OPEN = "open"  # waiting or running


COUNTED = (TrialOutcome.COMPLETE, TrialOutcome.PRUNED, TrialOutcome.FAILED)  # use n_trials


def trial_outcome(trial: Any) -> TrialOutcome:
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return TrialOutcome.COMPLETE
    if trial.state == TrialState.PRUNED:
        return TrialOutcome.PRUNED
    if trial.state == TrialState.FAIL:
        return (TrialOutcome.INTERRUPTED if trial.user_attrs.get(INTERRUPTED_ATTR)
                else TrialOutcome.FAILED)
    return TrialOutcome.OPEN


@dataclass
class Study:
    """One Optuna study of the sweep and the overrides that define it."""
    name: str
    own: list[str]  # one value of each study axis (model=ea): what sets it apart
    overrides: list[str]  # those, then the fixed overrides: what every trial of it gets
    study: Any  # optuna.Study

    def outcomes(self) -> dict[TrialOutcome, int]:
        """How many of its trials ended each way."""
        counts = dict.fromkeys(TrialOutcome, 0)
        for trial in self.study.get_trials(deepcopy=False):
            counts[trial_outcome(trial)] += 1
        return counts

    def counted(self) -> int:
        """Trials that used the study's n_trials: complete, pruned, or failed on their own."""
        counts = self.outcomes()
        return sum(counts[outcome] for outcome in COUNTED)

    def requeue(self, trial: Any, why: str) -> None:
        """End `trial` (a FrozenTrial or Trial) as failed by its sweep, not by its settings, and
        ask its settings again: its MLflow run resumes from its checkpoint (eanet.sweeps.plan)."""
        from optuna.trial import TrialState

        self.study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        self.study.enqueue_trial(trial.params, user_attrs={RESUMES_ATTR: trial.number})
        log.info("study %s: trial %d %s: asked again", self.name, trial.number, why)
