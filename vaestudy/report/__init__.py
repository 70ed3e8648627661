"""Reports: a study read back into pandas (`tables`: per trial, per variant, the answer), how
sure (`intervals`), its files and figures (`files`, `search_plots`: Optuna's) and the table of
study runs (`study_index`)."""
