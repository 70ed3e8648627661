"""vaestudy: hyperparameter studies of VAE training objectives (Ray Tune + Optuna + MLflow).

Trials run in the environment vaestudy is installed in (on a cluster: the same lock file on every
node). Ray's `uv run` integration, which would package the current directory (with its `mlflow/`
store, `ray_results/` and data) as each worker's working directory, is therefore switched off
unless RAY_ENABLE_UV_RUN_RUNTIME_ENV is set explicitly. Ray reads it when `ray` is first imported.
MLflow's "View run at <url>" lines are switched off too: a study's loopback server is gone by the
time anyone reads them (`vaestudy ui` opens the store), and so are its artifact download progress
bars (`vaestudy best` downloads one small file).
"""

import os

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
