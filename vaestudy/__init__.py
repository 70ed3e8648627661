"""vaestudy: hyperparameter studies of VAE training objectives (Ray Tune + Optuna + MLflow).

Trials run in the environment vaestudy is installed in (on a cluster: the same lock file on every
node). Ray's `uv run` integration, which would package the current directory (with its `mlflow/`
store, `ray_results/` and data) as each worker's working directory, is therefore switched off
unless RAY_ENABLE_UV_RUN_RUNTIME_ENV is set explicitly. Ray reads it when `ray` is first imported.
"""

import os

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
