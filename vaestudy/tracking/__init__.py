"""Tracking: where a study writes and how it reads it back. MLflow's names for vaestudy's runs
(`tags`), the stores and the loopback tracking server (`stores`, `server_guard`, `processes`),
MLflow writes (`runs`) and reads (`run_reader`: SQL on a local store)."""
