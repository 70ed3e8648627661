"""The study's progress display (no Ray: fed directly, as the Tune callback feeds it)."""

from __future__ import annotations

from rich.console import Console

from tests.conftest import REPO
from vaestudy.study.console import StudyProgress, constraint_marks
from vaestudy.study.spec import load_study


def test_rows_show_variants_constraints_and_what_waits(tmp_path):
    study = load_study(REPO / "studies" / "cpu" / "compare.yaml")
    console = Console(record=True, width=200, force_terminal=False)
    linear = study.distributions["objective"].choice[2]
    geco = study.distributions["objective"].choice[4]
    with StudyProgress(study, tmp_path / "s.log", console) as progress:
        progress.update("a", {"objective": linear, "train.seed": 0})
        result = {"train/step": 31.0, "train/loss": 120.5, "train/lambda/recon": 2.0,
                  "val/constraint/recon": 125.0, "val/target/recon": 120.0}  # fmt: skip
        progress.result("b", {"objective": geco, "train.seed": 1}, result)
        shown = console.export_text(clear=False)
        progress.ended("a", {"objective": linear, "train.seed": 0}, "ended")
    text = console.export_text()
    assert shown == ""  # not a terminal: a line per ended trial, and the table at the end
    assert "trial 1 (kl_annealing[kind=linear]) ended" in text
    table = text.split("study cpu-compare")[-1]
    assert "kl_annealing[kind=linear]" in table
    assert "recon 125/120 ✗" in table and "recon 2" in table
    assert (
        "1 running; 22 waiting for a free slot (at most 2 at a time, 1 CPU (trains on cpu) each)"
        in table
    )


def test_a_narrow_console_folds_labels_instead_of_cutting_them(tmp_path):
    study = load_study(REPO / "studies" / "cpu" / "compare.yaml")
    console = Console(record=True, width=80, force_terminal=False)
    linear = study.distributions["objective"].choice[2]
    lagvae = study.distributions["objective"].choice[5]
    result = {"train/step": 465.0, "train/loss": 387.9, "train/lambda/mmd": 6.184,
              "train/lambda/neg_elbo": 4.689, "val/constraint/mmd": 18.12,
              "val/target/mmd": 5.0, "val/constraint/neg_elbo": 167.0,
              "val/target/neg_elbo": 140.0}  # fmt: skip
    with StudyProgress(study, tmp_path / "s.log", console) as progress:
        progress.update("a", {"objective": linear, "train.seed": 0})
        progress.result("b", {"objective": lagvae, "train.seed": 0}, result)
    table = console.export_text().split("study cpu-compare")[-1]
    assert "…" not in table
    assert "[kind=linear" in table  # folded onto the next line, not cut


def test_constraint_marks_read_the_latest_held_out_check():
    marks = constraint_marks({"val/constraint/a": 1.0, "val/target/a": 2.0,
                              "val/constraint/b": 3.0, "val/target/b": 2.5})  # fmt: skip
    assert marks == "a 1/2 ✓, b 3/2.5 ✗"


def test_a_pack_shows_a_row_per_member(tmp_path):
    """Ray Tune's callback on a packed trial (confirmation seeds of one variant): each member is
    its own row and line, named as its MLflow run, with its own outcome."""
    from types import SimpleNamespace

    from vaestudy.study.console import tune_callback
    from vaestudy.study.spec import CONFIRMS

    study = load_study(REPO / "studies" / "cpu" / "compare.yaml")
    geco = study.distributions["objective"].choice[4]
    members = [
        {"objective": geco, "train.seed": s, CONFIRMS: {"run_id": "r", "number": 4, "seed": s}}
        for s in (1000, 1001)
    ]
    last = {"member0/vaestudy/diverged": 0, "member1/vaestudy/diverged": 1}
    trial = SimpleNamespace(trial_id="t1", config={"members": members}, last_result=last)
    console = Console(record=True, width=200, force_terminal=False)
    with StudyProgress(study, tmp_path / "s.log", console) as progress:
        callback = tune_callback(progress)
        callback.on_trial_start(0, [], trial)
        callback.on_trial_complete(0, [], trial)
    text = console.export_text()
    assert "trial #4 seed 1000 (geco) ended" in text
    assert "trial #4 seed 1001 (geco) diverged" in text
    assert "(?)" not in text
