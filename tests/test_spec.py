"""Study files: objective variants get readable labels; the constraint keys validate early."""

import pytest

from tests.conftest import REPO
from vaestudy.errors import ConfigError
from vaestudy.study.spec import load_study

COMPARE = REPO / "studies" / "compare.yaml"
CPU_COMPARE = REPO / "studies" / "cpu" / "compare.yaml"


def test_choices_of_one_objective_are_labelled_by_the_keys_that_differ():
    study = load_study(COMPARE)
    assert study.variants == [
        "elbo",
        "beta_vae",
        "kl_annealing[kind=linear]",  # its steps are searched, as the other's: not a difference
        "kl_annealing[kind=cyclical]",
        "geco",
        "lagvae",
        "infovae",
        "icvae",
    ]
    choices = study.distributions["objective"].choice
    assert study.variant({"objective": choices[3], "train.seed": 1}) == (
        "kl_annealing[kind=cyclical]"
    )


def test_labels_use_the_full_key_when_last_parts_clash(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "study:\n  name: s\n  search:\n    objective:\n      choice:\n"
        "        - {name: geco, kappa: 90, multiplier: {init: 1.0}}\n"
        "        - {name: geco, kappa: 90, multiplier: {init: 2.0}}\n"
        "        - {name: beta_vae, beta: 4}\n"
        "        - {name: beta_vae, beta: 0.5}\n"
    )
    study = load_study(path)
    assert study.variants == [
        "geco[init=1]",
        "geco[init=2]",
        "beta_vae[beta=4]",
        "beta_vae[beta=0.5]",
    ]
    assert study.variant({}) == "elbo"  # objective not searched in this trial: its name


def test_without_an_objective_choice_the_variant_is_the_objective():
    study = load_study(REPO / "studies" / "geco.yaml")
    assert study.variants == [] and study.variant({"objective.kappa": 100.0}) == "geco"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["study.search_constraints=all"], "study.search_constraints"),
        (["study.search_constraints=yardstick", "study.constraints=[]"], "needs a `constraints`"),
        (
            ["study.pack=2", "study.search={objective.kappa: {uniform: [80, 90]}}",
             "train.stop_saturated=true"],
            "train.stop_saturated: packed trials",
        ),
    ],
)  # fmt: skip
def test_bad_constraint_settings_fail_at_validation(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_study(REPO / "studies" / "geco.yaml", overrides)
