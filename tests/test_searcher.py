"""ASHA-stopped trials reach Optuna as pruned, full-budget trials as complete."""

from optuna.trial import TrialState

from conftest import SEARCH_SPACE
from depthtune.search_space import optuna_space, parse_search_space
from depthtune.searcher import BudgetAwareOptunaSearch


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
        result = {"val_loss": loss, "training_iteration": epoch}
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
