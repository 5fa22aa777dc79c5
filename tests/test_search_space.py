"""Search-space validation: every bad range is an error naming the parameter and the value."""

import copy

import optuna
import pytest

from conftest import SEARCH_SPACE as GOOD
from depthtune.search_space import optuna_space, parse_search_space


def test_good_space_becomes_optuna_distributions():
    space = optuna_space(parse_search_space(GOOD))
    assert space["lr"] == optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    assert space["step_size"] == optuna.distributions.IntDistribution(2, 8)
    assert space["momentum"] == optuna.distributions.FloatDistribution(0.5, 0.95)


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("lr", {"low": 0.0}, "search_space.lr.low=0.0: lr must be > 0"),
        ("lr", {"low": 0.1, "high": 0.01}, "low=0.1 must be below high=0.01"),
        ("momentum", {"high": 1.2}, "momentum.high=1.2: momentum must be in [0, 1)"),
        ("step_size", {"low": 0}, "step_size.low=0: step_size must be >= 1"),
        ("step_size", {"high": 4.5}, "step_size.high=4.5: expected an integer"),
        ("grad_weight", {"type": "loguniform"}, "type 'loguniform' is not allowed"),
        ("lr", {"low": "small"}, "lr.low='small'"),
    ],
)
def test_bad_ranges_are_named(name, change, message):
    values = copy.deepcopy(GOOD)
    values[name].update(change)
    with pytest.raises(ValueError) as error:
        parse_search_space(values)
    assert message in str(error.value)


def test_unknown_parameters_and_an_empty_space_are_refused_a_subset_is_searched():
    values = copy.deepcopy(GOOD)
    del values["momentum"]
    assert list(parse_search_space(values)) == ["lr", "step_size", "grad_weight"]
    values["dropout"] = {"type": "uniform", "low": 0, "high": 1}
    with pytest.raises(
        ValueError, match=r"expected ranges for one or more of .*; got \['dropout', 'grad_weight', 'lr', 'step_size'\]"
    ):
        parse_search_space(values)
    with pytest.raises(ValueError, match="expected ranges for one or more of"):
        parse_search_space({})


def test_range_needs_exactly_type_low_high():
    values = copy.deepcopy(GOOD)
    values["lr"] = {"type": "loguniform", "low": 1e-3}
    with pytest.raises(ValueError, match="search_space.lr: expected"):
        parse_search_space(values)
