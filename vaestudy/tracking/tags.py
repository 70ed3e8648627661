"""The names vaestudy gives things in MLflow: its run tags, the trial phases, the trial config
artifact. Standard library only, so that what reads a store directly (`vaestudy.report.study_index`)
and what trials and the search share need not import MLflow."""

from __future__ import annotations

TAG_STUDY = "vaestudy.study"
TAG_KIND = "vaestudy.kind"
TAG_OPTUNA = "vaestudy.optuna_study"  # parent run: its Optuna study's name (= the run's name)
TAG_OPTUNA_STORAGE = "vaestudy.optuna_storage"  # parent run: that study's storage URL (no secret)
TAG_TUNE_PATH = "vaestudy.tune_path"  # parent run: its Ray Tune experiment (a path or a URI)
TAG_TRIAL = "vaestudy.trial_id"
TAG_OBJECTIVE = "vaestudy.objective"
TAG_MODEL = "vaestudy.model"
TAG_FAILURE = "vaestudy.failure_reason"
TAG_FAILURE_STEP = "vaestudy.failure_step"
TAG_STOPPED = "vaestudy.stopped_early"
TAG_INTERRUPTED = "vaestudy.interrupted"  # a killed study's unfinished attempt, run again anew
TAG_VARIANT = "vaestudy.variant"  # the objective variant's label (vaestudy.study.spec)
# A finished trial's standing (vaestudy.training.feasibility), for filtering in the MLflow UI: the
# verdict, on the test split ...
TAG_STATE = "vaestudy.state"  # feasible | yardstick only | own only | neither
TAG_OWN = "vaestudy.satisfies_own"  # "true" / "false"
TAG_YARDSTICK = "vaestudy.satisfies_yardstick"
TAG_FEASIBLE = "vaestudy.feasible"
TAG_VAL_FEASIBLE = "vaestudy.val_feasible"  # ... and feasible on validation: what selection reads
TAG_SATURATED = "vaestudy.saturated"  # comma-joined names: "target unreachable at this budget"
# A trial's phase: the search, or the confirmation of a selected trial with a fresh seed.
TAG_PHASE = "vaestudy.phase"
SEARCH, CONFIRM = "search", "confirm"
TAG_CONFIRMS = "vaestudy.confirms"  # a confirmation run: the run id of the trial it confirms
PARENT = "mlflow.parentRunId"
TRIAL_CONFIG = "config.yaml"  # a trial run's artifact: its whole config, as `vaestudy train` takes
TAG_NOTE = "mlflow.note.content"  # a run's description (Markdown) in the MLflow UI
# MLflow 3's UI opens an experiment by its kind: model training shows the runs table (without
# it, an experiment with no runs logged the classic way opens in the GenAI traces view).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
