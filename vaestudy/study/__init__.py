"""Studies: study files (`spec`), the Optuna search (`search`), trials (`trial`), the runner."""
