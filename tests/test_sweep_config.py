"""Sweep configs: profile and command-line layering, and validation that names the bad value."""

import pytest
import yaml

from conftest import PAPER_SETTINGS, SEARCH_SPACE, SWEEP_SPACE
from depthtune.configs import SHIPPED, shipped_config
from depthtune.sweep.config import SweepConfig

SWEEP_CONFIGS = [shipped_config(name) for name in SHIPPED if name != "demo"]


def base(**extra):
    return {
        "model": "net12",
        "search_space": SWEEP_SPACE,
        "paper_settings": PAPER_SETTINGS,
        "train": {"epochs": 10},
        **extra,
    }


def test_profile_then_flags_win():
    values = base(num_samples=20, profiles={"cpu": {"num_samples": 4, "train": {"epochs": 3, "batch_size": 8}}})
    cpu = SweepConfig.from_dict(values, profile="cpu")
    assert (cpu.num_samples, cpu.epochs, cpu.train["batch_size"]) == (4, 3, 8)
    flagged = SweepConfig.from_dict(values, profile="cpu", overrides={"num_samples": 2, "train": {"epochs": 5}})
    assert (flagged.num_samples, flagged.epochs, flagged.train["batch_size"]) == (2, 5, 8)
    paper = SweepConfig.from_dict(values, profile="paper")
    assert (paper.num_samples, paper.epochs) == (20, 10)


def test_an_epochs_flag_rescales_the_grace_period_and_the_step_size_range():
    values = base(grace_period=3, search_space={**SWEEP_SPACE, "step_size": {"type": "int", "low": 3, "high": 8}})
    for epochs, grace, space, fixed in [(20, 3, (6, 16), None), (5, 3, (2, 4), None), (1, 1, None, 1)]:
        config = SweepConfig.from_dict(values, profile="cpu", overrides={"train": {"epochs": epochs}})
        step = config.search_space.get("step_size")
        assert (config.grace_period, step and (step["low"], step["high"]), config.train.get("step_size")) == (
            grace,
            space,
            fixed,
        )
        assert config.is_baseline(config.baseline_params)  # the paper's settings stay inside the search
    own = SweepConfig.from_dict(values, profile="cpu", overrides={"train": {"epochs": 5}, "grace_period": 2})
    assert own.grace_period == 2
    with pytest.raises(ValueError, match="grace_period=3 exceeds train.epochs=2"):
        SweepConfig.from_dict(base(grace_period=3, train={"epochs": 2}), profile="cpu")  # a YAML's own mistake


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"metric": "val_accuracy"}, "metric='val_accuracy'"),
        ({"num_samples": 0}, "num_samples=0"),
        ({"reduction_factor": 1}, "reduction_factor=1"),
        ({"gpus_per_trial": 1.5}, "gpus_per_trial=1.5"),
        ({"train": {"epochs": 10, "lr": 0.1}}, "['lr'] are searched; set them in search_space or in train, not both"),
        ({"search_space": {"lr": SEARCH_SPACE["lr"]}}, "['momentum', 'step_size', 'grad_weight'] are neither searched"),
        (
            {"paper_settings": {**PAPER_SETTINGS, "lr": 0.5}},
            "paper_settings give lr=0.5, outside search_space.lr [0.001, 0.1]",
        ),
        (
            {"paper_settings": {**PAPER_SETTINGS, "step_fraction": 1.5}},
            "step_fraction=1.5: expected a share of the epochs in (0, 1]",
        ),
        ({"paper_settings": {**PAPER_SETTINGS, "source": " "}}, "source: cite the paper"),
        ({"paper_settings": {"lr": 0.01}}, "paper_settings"),
        ({"train": {"epochs": 2}, "grace_period": 3}, "grace_period=3 exceeds train.epochs=2"),
        ({"model": "unet"}, "model='unet'"),
        ({"train": {"epochs": 0}}, "epochs=0"),
        ({"num_trials": 3}, "num_trials"),
        ({"resources_per_trial": {"GPU": 1}}, "resources_per_trial['GPU']=1"),
        ({"resources_per_trial": {"fake_gpu": 0}}, "resources_per_trial['fake_gpu']=0"),
        ({"storage_path": "s3://bucket/ray_results"}, "use a filesystem every node mounts"),
        ({"searcher": "grid"}, "searcher='grid': expected one of ['tpe', 'random']"),
        ({"scheduler": "hyperband"}, "scheduler='hyperband': expected one of ['asha', 'fifo']"),
    ],
)
def test_bad_values_are_named(extra, message):
    with pytest.raises(ValueError) as error:
        SweepConfig.from_dict(base(**extra), profile="paper")
    assert message in str(error.value)


def test_trial_config_combines_fixed_and_sampled_values():
    config = SweepConfig.from_dict(base(), profile="paper")
    trial = config.trial_config({"lr": 0.02, "momentum": 0.9, "step_size": 4.0, "grad_weight": 0.5}, data="x.mat")
    assert (trial.lr, trial.step_size, trial.epochs, trial.select_metric, trial.data) == (
        0.02,
        4,
        10,
        "val_abs_rel",
        "x.mat",
    )


def test_a_loss_whose_weight_is_searched_is_refused_as_the_objective():
    with pytest.raises(ValueError) as error:
        SweepConfig.from_dict(base(metric="val_loss"), profile="paper")
    assert "metric='val_loss' includes grad_weight times a term >= 0, and grad_weight is searched" in str(error.value)
    # with the weight fixed (at the paper's value), the loss no longer moves with a searched setting
    space = {k: v for k, v in SEARCH_SPACE.items() if k != "grad_weight"}
    fixed = SweepConfig.from_dict(
        base(metric="val_loss", search_space=space, train={"epochs": 10, "grad_weight": 1.0}), profile="paper"
    )
    assert fixed.trial_config(fixed.baseline_params).grad_weight == 1.0
    with pytest.raises(
        ValueError, match=r"train.grad_weight=0.5 differs from the paper's 1: the baseline trial would not be"
    ):
        SweepConfig.from_dict(
            base(metric="val_loss", search_space=space, train={"epochs": 10, "grad_weight": 0.5}), profile="paper"
        )


def test_the_baseline_trial_is_the_papers_settings_at_the_sweeps_budget():
    config = SweepConfig.from_dict(base(), profile="paper")
    assert config.baseline_params == {"lr": 0.01, "momentum": 0.9, "step_size": 3, "grad_weight": 1.0}
    assert config.is_baseline(dict(config.baseline_params)) and not config.is_baseline(
        {**config.baseline_params, "lr": 0.02}
    )
    shipped = SweepConfig.from_dict(yaml.safe_load(shipped_config("fcrn").read_text()), profile="cpu")
    assert shipped.baseline_params == {"lr": 0.01, "momentum": 0.9, "step_size": 2, "grad_weight": 0.0}


@pytest.mark.parametrize("profile", ["paper", "cpu"])
def test_shipped_configs_are_valid(profile):
    for path in SWEEP_CONFIGS:
        SweepConfig.from_dict(yaml.safe_load(path.read_text()), profile=profile, where=str(path))


@pytest.mark.parametrize("profile", ["paper", "cpu"])
def test_shipped_loader_workers_fit_in_a_trials_cpus(profile):
    """GPU trials load in worker processes beside the training one; one-CPU trials load inline."""
    for path in SWEEP_CONFIGS:
        config = SweepConfig.from_dict(yaml.safe_load(path.read_text()), profile=profile, where=str(path))
        lows = {name: r.low for name, r in config.space.items()}
        workers = config.trial_config(lows, net12_checkpoint=config.net12_model).num_workers
        assert workers == (0 if config.cpus_per_trial <= 1 else config.cpus_per_trial - 1), path


def test_resume_needs_a_sweep_and_a_new_sweep_never_overwrites_one(tmp_path):
    """Both refusals come before any data, server or Ray is touched."""
    from depthtune.sweep.driver import run_sweep
    from depthtune.sweep.state import STATE_FILE

    config = SweepConfig.from_dict(base(storage_path=str(tmp_path)), profile="cpu")
    with pytest.raises(FileNotFoundError, match="nothing to resume: no net12 sweep under"):
        run_sweep(config, resume=True)
    (tmp_path / "net12-old").mkdir()
    (tmp_path / "net12-old" / STATE_FILE).write_text('{"parent_run_id": "abc"}')
    named = SweepConfig.from_dict(base(storage_path=str(tmp_path), name="net12-old"), profile="cpu")
    with pytest.raises(FileExistsError, match="a sweep named 'net12-old' already exists"):
        run_sweep(named)
    assert (tmp_path / "net12-old" / STATE_FILE).read_text() == '{"parent_run_id": "abc"}'


def test_variant_is_checked_with_the_rest_of_the_config():
    assert SweepConfig.from_dict(base(variant="paper"), profile="cpu").variant == "paper"
    assert SweepConfig.from_dict(base(), profile="cpu").variant is None  # the profile's default, chosen at start
    with pytest.raises(ValueError, match=r"variant='faithful': expected one of \['paper', 'project'\] or null"):
        SweepConfig.from_dict(base(variant="faithful"), profile="cpu")
