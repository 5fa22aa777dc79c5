"""ASHA-stopped trials reach Optuna as pruned, full-budget trials as complete; the config picks
TPE or random search and ASHA or FIFO."""

from pathlib import Path

import pytest
from optuna.samplers import RandomSampler, TPESampler
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from conftest import SEARCH_SPACE, sweep_config
from depthtune.search_space import optuna_space, parse_search_space
from depthtune.sweep.searcher import (
    BudgetAwareOptunaSearch,
    describe_search,
    search_algorithm,
    stopping_epochs,
    trial_scheduler,
)


def _searcher():
    searcher = BudgetAwareOptunaSearch(
        optuna_space(parse_search_space(SEARCH_SPACE)), metric="val_loss", mode="min", seed=3, max_epochs=4
    )
    return searcher


def _run(searcher, trial_id, losses, error=False):
    config = searcher.suggest(trial_id)
    assert set(config) == {"lr", "momentum", "step_size", "grad_weight"}
    result = None
    for epoch, loss in enumerate(losses, start=1):
        result = {searcher.metric: loss, "training_iteration": epoch}
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result, error=error)


def test_stopped_trials_are_pruned_finished_ones_complete():
    searcher = _searcher()
    _run(searcher, "full", [1.0, 0.8, 0.6, 0.5])
    _run(searcher, "stopped", [2.0])
    _run(searcher, "crashed", [1.5], error=True)
    states = {t.number: t.state for t in searcher._ot_study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED, 2: TrialState.FAIL}
    full, stopped, _ = searcher._ot_study.trials
    assert full.value == 0.5
    assert stopped.intermediate_values == {1: 2.0}  # TPE ranks pruned trials by the step they reached


def test_suggestions_are_seeded():
    a, b = _searcher(), _searcher()
    assert a.suggest("x") == b.suggest("x")


def _algorithm(config):
    """The sweep's searcher on a study in memory."""
    return search_algorithm(config, InMemoryStorage(), "sweep")


def _told(searcher, losses):
    """Suggest and complete one full-budget trial per loss; return the next suggestion."""
    for number, loss in enumerate(losses):
        _run(searcher, f"t{number}", [loss] * 4)
    return searcher.suggest("next")


def test_random_search_ignores_results_and_tpe_uses_them(tmp_path: Path):
    configs = {
        kind: sweep_config(tmp_path / "x.mat", tmp_path, searcher=kind, seed=5, train={"epochs": 4})
        for kind in ("tpe", "random")
    }
    tpe, random = _algorithm(configs["tpe"]), _algorithm(configs["random"])
    assert isinstance(tpe._sampler, TPESampler) and isinstance(random._sampler, RandomSampler)
    good, bad = list(range(12)), list(range(12, 0, -1))
    assert _told(_algorithm(configs["random"]), good) == _told(_algorithm(configs["random"]), bad)
    assert _told(_algorithm(configs["tpe"]), good) != _told(_algorithm(configs["tpe"]), bad)


def test_tpe_models_results_after_its_startup_trials(tmp_path: Path):
    def tpe(startup: int):
        return _algorithm(
            sweep_config(tmp_path / "x.mat", tmp_path, seed=5, startup_trials=startup, train={"epochs": 4})
        )

    good, bad = list(range(4)), list(range(4, 0, -1))
    assert tpe(3)._sampler._n_startup_trials == 3
    assert _told(tpe(3), good) != _told(tpe(3), bad)  # the 5th trial comes from the model of the first 4
    assert _told(tpe(10), good) == _told(tpe(10), bad)  # still drawing its 10 random start-up trials
    assert (
        "3 random start-up trials"
        in describe_search(sweep_config(tmp_path / "x.mat", tmp_path, startup_trials=3))["searcher"]
    )
    with pytest.raises(ValueError, match="startup_trials=0"):
        sweep_config(tmp_path / "x.mat", tmp_path, startup_trials=0)


def test_fifo_runs_every_trial_to_the_end_asha_stops(tmp_path: Path):
    asha = sweep_config(tmp_path / "x.mat", tmp_path, grace_period=2, train={"epochs": 6})
    fifo = sweep_config(tmp_path / "x.mat", tmp_path, scheduler="fifo", train={"epochs": 6})
    scheduler = trial_scheduler(asha)
    assert isinstance(scheduler, ASHAScheduler) and scheduler._max_t == 6
    assert sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs) == [2, 4]  # grace 2, factor 2
    assert type(trial_scheduler(fifo)) is FIFOScheduler
    assert describe_search(fifo)["scheduler"] == "FIFO (no early stopping)"
    assert describe_search(asha)["searcher"].startswith("OptunaSearch(TPE, seed=7")


@pytest.mark.parametrize("epochs, grace, factor", [(8, 1, 2), (6, 2, 2), (30, 3, 3), (10, 4, 3), (5, 5, 2)])
def test_stopping_epochs_are_ashas_rungs(tmp_path: Path, epochs: int, grace: int, factor: int):
    space = {**SEARCH_SPACE, "step_size": {"type": "int", "low": 1, "high": 30}}
    config = sweep_config(
        tmp_path / "x.mat",
        tmp_path,
        grace_period=grace,
        reduction_factor=factor,
        train={"epochs": epochs},
        search_space=space,
    )
    rungs = {milestone for milestone, _ in trial_scheduler(config)._brackets[0]._rungs}
    assert stopping_epochs(config) == rungs | {epochs}
    fifo = sweep_config(tmp_path / "x.mat", tmp_path, scheduler="fifo", train={"epochs": epochs}, search_space=space)
    assert stopping_epochs(fifo) == frozenset()


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_the_first_trial_is_the_papers_settings_and_the_searcher_learns_from_it(tmp_path, kind):
    config = sweep_config(tmp_path / "x.mat", tmp_path, searcher=kind, seed=5, train={"epochs": 4})
    searcher = _algorithm(config)
    first = searcher.suggest("paper")
    assert first == config.baseline_params == {"lr": 0.01, "momentum": 0.9, "step_size": 1, "grad_weight": 1.0}
    assert config.is_baseline(first) and not config.is_baseline(searcher.suggest("next"))
    for epoch in range(1, 5):
        searcher.on_trial_result("paper", {"val_abs_rel": 0.3, "training_iteration": epoch})
    searcher.on_trial_complete("paper", {"val_abs_rel": 0.3, "training_iteration": 4})
    (told,) = [t for t in searcher._ot_study.trials if t.state == TrialState.COMPLETE]
    assert told.params == first and told.value == 0.3


def _asha_stops(scheduler, trials: dict[str, dict], scores: dict[str, float], epoch: int) -> dict[str, str]:
    """Feed one epoch's result of every trial to the scheduler; its decision per trial."""
    return {
        name: scheduler.on_trial_result(None, trials[name], {"training_iteration": epoch, "val_abs_rel": scores[name]})
        for name in scores
    }


def test_asha_never_stops_the_paper_trial_early_but_ranks_the_others_against_it(tmp_path):
    """Real ASHA bookkeeping: at the first rung the paper trial is the worst, and plain ASHA stops it;
    the sweep's scheduler lets it go on, and stops a sampled trial that scores as badly."""
    from types import SimpleNamespace

    config = sweep_config(tmp_path / "x.mat", tmp_path, grace_period=1, reduction_factor=2, train={"epochs": 4})
    other = {**config.baseline_params, "lr": 0.05}
    trials = {
        name: SimpleNamespace(trial_id=name, config=params)
        for name, params in (
            ("good", {**other, "lr": 0.02}),
            ("paper", config.baseline_params),
            ("bad", {**other, "lr": 0.09}),
        )
    }
    plain = ASHAScheduler(metric="val_abs_rel", mode="min", max_t=4, grace_period=1, reduction_factor=2)
    ours = trial_scheduler(config)
    ours.set_search_properties("val_abs_rel", "min")
    for scheduler in (plain, ours):
        for trial in trials.values():
            scheduler.on_trial_add(None, trial)
    scores = {"good": 0.2, "paper": 0.5}
    assert _asha_stops(plain, trials, scores, 1) == {"good": "CONTINUE", "paper": "STOP"}
    assert _asha_stops(ours, trials, scores, 1) == {"good": "CONTINUE", "paper": "CONTINUE"}
    assert _asha_stops(ours, trials, {"bad": 0.5}, 1) == {"bad": "STOP"}
    assert _asha_stops(ours, trials, {"paper": 0.5}, 4) == {"paper": "STOP"}  # its budget is done
