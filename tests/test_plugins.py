"""A user's objective, network and dataset from outside the package (examples/plugin, installed
with the dev group): by entry point and by import path, through config validation, the trainer,
a real study and the report; and every way a plugin can be missing, named with exit 2."""

from __future__ import annotations

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from vaestudy_example.network import ResidualMlp, ResidualMlpConfig
from vaestudy_example.objective import RateConfig, RateConstrainedVae

from tests.conftest import REPO, TINY, children
from vaestudy.cli import main
from vaestudy.config.run import RunConfig
from vaestudy.report.tables import build_report
from vaestudy.study.runner import run_study
from vaestudy.study.spec import load_study
from vaestudy.training.data import load_data
from vaestudy.training.likelihoods import make_nll
from vaestudy.training.models import build_model
from vaestudy.training.trainer import Trainer
from vaestudy.training.vectorized import VectorTrainer

EXAMPLE = REPO / "examples" / "plugin" / "study.yaml"
IMPORT_PATH = "vaestudy_example.objective:RateConstrainedVae"
NETWORK = "vaestudy_example.network:ResidualMlp"


def tiny_run(**sections: dict) -> RunConfig:
    """The plugin's shapes (by entry point), a small residual MLP (by import path)."""
    raw = {
        "data": {"dataset": "shapes", "train_count": 600, "test_count": 150},
        "model": {"name": NETWORK, "latent_dim": 4, "width": 64, "depth": 1},
        "train": {"epochs": 2, "batch_size": 50, "log_every": 4, "iwae_samples": 5},
        **sections,
    }
    return RunConfig.model_validate(raw)


@pytest.mark.parametrize("name", ["rate_vae", IMPORT_PATH])
def test_a_plugin_objective_validates_with_its_own_config(name):
    cfg = RunConfig.model_validate({"objective": {"name": name, "epsilon": 9.0}})
    assert type(cfg.objective) is RateConfig and cfg.objective.epsilon == 9.0
    assert cfg.objective.constraint_names == ("rate",)
    dumped = cfg.model_dump(mode="json")  # every field of the plugin's config, not the base's
    assert dumped["objective"]["epsilon"] == 9.0 and "multiplier" in dumped["objective"]
    assert RunConfig.model_validate(dumped) == cfg


def test_a_plugin_config_error_names_the_file_and_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "objective: {name: rate_vae, epsilon: -1, capacity: 3}\n"
        "model: {name: resmlp, depth: 0}\n"
        "data: {dataset: shapes, test_count: many}\n"
    )
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: objective.epsilon: Input should be greater than 0" in err
    assert f"{path}: objective.capacity: unknown key" in err
    assert f"{path}: model.depth: Input should be greater than or equal to 1" in err
    assert f"{path}: data.test_count: Input should be a valid integer" in err


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """A package on sys.path whose modules fail in the ways a user's plugin can."""
    pkg = tmp_path / "plugins" / "userpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "crashes.py").write_text("raise RuntimeError('needs a GPU driver')\n")
    (pkg / "plain.py").write_text("class NotAnObjective:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("capacity_vae", "unknown objective 'capacity_vae': expected one of elbo"),
        ("absentpkg.objectives:Capacity", "cannot import module 'absentpkg.objectives'"),
        ("userpkg.crashes:Capacity", "importing 'userpkg.crashes' failed: RuntimeError: needs a"),
        ("userpkg.plain:Capacity", "module 'userpkg.plain' has no attribute 'Capacity'"),
        ("userpkg.plain:NotAnObjective", "whose attribute `config` is a subclass of"),
        ("userpkg.plain", "an import path names its attribute after a colon"),
        ("userpkg.plain:", "expected an import path 'package.module:Class'"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_is_named_with_exit_2(
    tmp_path, capsys, broken_plugins, name, expected
):
    path = tmp_path / "study.yaml"
    text = EXAMPLE.read_text().replace(
        "objective: {name: rate_vae}", f"objective: {{name: '{name}'}}"
    )
    path.write_text(text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{path}: objective.name: " in err and expected in err


@pytest.mark.parametrize(
    "section, name, config",
    [
        ("model", "resmlp", ResidualMlpConfig),
        ("model", NETWORK, ResidualMlpConfig),
        ("data", "vaestudy_example.shapes:Shapes", None),
    ],
)
def test_a_plugin_network_and_dataset_validate_by_either_name(section, name, config):
    key = "dataset" if section == "data" else "name"
    cfg = RunConfig.model_validate({section: {key: name}})
    if config is not None:
        assert type(cfg.model) is config and cfg.model.width == 256  # its own defaults
        assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    else:
        assert cfg.data.dataset == name


def test_a_plugin_network_and_dataset_train_from_a_config():
    cfg = tiny_run(objective={"name": "elbo"})
    trainer = Trainer(cfg)
    assert isinstance(trainer.model, ResidualMlp) and trainer.data.shape == (1, 32, 32)
    assert trainer.data.n_classes == 3
    assert len(trainer.data.test_x) == 150  # the dataset's own config field (test_count)
    result = trainer.fit()
    assert result.val["recon"] < result.history[0]["recon"]  # it learns


def test_the_trainer_takes_a_built_objective_and_model():
    """A notebook's path: the user's modules built by hand, trained by `Trainer`, give what the
    config path gives."""
    cfg = tiny_run(objective={"name": "rate_vae", "epsilon": 5.0})
    torch.manual_seed(0)
    data = load_data(cfg.data, torch.device("cpu"))
    objective = RateConstrainedVae(RateConfig(name="mine", epsilon=5.0), make_nll(cfg.data))
    model = build_model(cfg.model, data.shape, data.n_classes)
    assert isinstance(model, ResidualMlp)
    trainer = Trainer(cfg, data=data, model=model, objective=objective)
    assert trainer.objective is objective and trainer.model is model
    assert trainer.cfg.objective.name == "mine"  # the config follows what runs
    result = trainer.fit()
    assert {"lambda/rate", "constraint/rate", "target/rate"} <= set(result.history[-1])
    assert result.val["target/rate"] == 5.0 and "constraint/rate" in result.test
    from_config = Trainer(cfg)
    assert isinstance(from_config.objective, RateConstrainedVae)


@pytest.mark.parametrize("how", ["built", "configured"])
def test_plugin_objectives_train_vectorised_with_their_own_targets(how):
    """Two of the user's objectives differing in ε, trained as one vmap'd computation (a pack),
    from hand-built modules or from configs: each member keeps its own target and multiplier."""
    cfgs = [tiny_run(objective={"name": "rate_vae", "epsilon": e}) for e in (2.0, 6.0)]
    if how == "built":
        data = load_data(cfgs[0].data, torch.device("cpu"))
        nll = make_nll(cfgs[0].data)
        objectives = [RateConstrainedVae(c.objective, nll) for c in cfgs]
        models = [build_model(c.model, data.shape, data.n_classes) for c in cfgs]
        trainer = VectorTrainer(cfgs, data=data, models=models, objectives=objectives)
        assert trainer.members[1].objective is objectives[1]
    else:
        trainer = VectorTrainer(cfgs)
    results = trainer.fit()
    assert [r.val["target/rate"] for r in results] == [2.0, 6.0]
    lambdas = [r.history[-1]["lambda/rate"] for r in results]
    assert lambdas[0] != lambdas[1]


@pytest.mark.slow
def test_a_study_of_plugin_and_built_in_objectives_answers_like_a_built_in_one(
    tmp_path, server, ray_session, monkeypatch
):
    """The example study (objective and dataset by entry point), its network named by import
    path and a fourth variant naming the objective by import path, through Ray Tune, Optuna and
    MLflow: the plugin's constraint reaches Optuna, the trajectories and the report like a
    built-in one's."""
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["study"]["search"]["objective"]["choice"].append({"name": IMPORT_PATH, "epsilon": 30.0})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    overrides = [
        *TINY,
        f"model.name={NETWORK}",
        "model.width=64",
        "study.budget_per_variant=2",
        "study.confirm.seeds=2",
    ]
    outcome = run_study(load_study(path, overrides), tracking_uri=server)
    client = MlflowClient(server)
    runs = children(client, outcome.parent_run_id)
    by_objective: dict[str, list] = {}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["vaestudy.model"] == NETWORK
        by_objective.setdefault(run.data.tags["vaestudy.objective"], []).append(run)
    assert set(by_objective) == {"rate_vae", IMPORT_PATH, "beta_vae", "geco"}
    plugin_runs = by_objective["rate_vae"] + by_objective[IMPORT_PATH]
    for run in plugin_runs:
        m = run.data.metrics
        assert {"train/lambda/rate", "val/constraint/rate", "test/constraint/rate"} <= set(m)
        own = m["val/constraint/rate"] <= m["val/target/rate"]
        assert run.data.tags["vaestudy.satisfies_own"] == str(own).lower()

    tags = client.get_run(outcome.parent_run_id).data.tags
    ot = optuna.load_study(
        study_name=tags["vaestudy.optuna_study"], storage=tags["vaestudy.optuna_storage"]
    )
    by_trial = {r.data.tags.get("vaestudy.trial_id"): r for r in plugin_runs}
    seen = 0
    for trial in ot.trials:
        run = by_trial.get(trial.user_attrs.get("tune_trial_id"))
        if run is not None:
            m = run.data.metrics
            assert trial.constraints["own"] == pytest.approx(
                m["val/constraint/rate"] - m["val/target/rate"]
            )
            seen += 1
    assert seen == 4  # 2 search trials per plugin variant

    report = build_report(client, raw["study"]["name"])
    rows = report.trials[report.trials["objective"].isin(["rate_vae", IMPORT_PATH])]
    assert len(rows) == len(plugin_runs)
    assert set(report.confirmation["variant"]) >= {"rate_vae", IMPORT_PATH}
