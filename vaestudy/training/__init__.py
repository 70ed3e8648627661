"""Training: one run over tensors, no Ray and no MLflow. Data (`data`, `datasets/`), networks
(`models/`), objectives (`objectives/`, `likelihoods`, `divergences`), Lagrange multipliers
(`multipliers`), the GPU-resident loop (`trainer`, `vectorized`: K runs as one), held-out
evaluation (`evaluation`), the one feasibility rule (`feasibility`), a run's figures
(`plots`, `image_grids`) and `vaestudy train`'s display (`progress`)."""
