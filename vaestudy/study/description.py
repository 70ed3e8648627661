"""The description a study's parent run shows in the MLflow UI (its note, Markdown).

Written when the run starts: where the study came from (file, overrides), where its Optuna
study lives (name, storage), what it searches, its metric, its yardstick and which constraints
the search sees. When the study ends, `vaestudy.report.tables.log_answer` puts the answer in one
line above it (what the UI shows before "Show more") and the per-variant table below it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaestudy.study.spec import Choice, Study, describe


def _distribution(key: str, dist: Any, study: Study) -> str:
    if isinstance(dist, Choice) and key == "objective" and study.variants:
        return "one of " + ", ".join(f"`{label}`" for label in study.variants)
    return describe(dist)


def study_note(study: Study, optuna_name: str, optuna_storage: str) -> str:
    """The parent run's description (Markdown) before any trial ran."""
    spec = study.spec
    overrides = " ".join(f"`{o}`" for o in study.overrides) or "none"
    search = [f"- `{k}`: {_distribution(k, d, study)}" for k, d in study.distributions.items()]
    search += [f"- `{k}`: {describe(d)}" for k, d in study.variant_searched.items()]
    fixed = [f"- `{key}` = `{value}`" for key, value in study.fixed.items()]
    yardstick = ", ".join(f"`{rule.label}`" for rule in spec.constraints) or "none"
    metrics = ", ".join(f"`{m}` ({mode})" for m, mode in zip(spec.metrics, spec.modes, strict=True))
    packs = f", in packs of {spec.pack}" if spec.pack > 1 else ""
    lines = [
        f"**Study `{study.name}`** from `{Path(study.source).resolve()}` (overrides: {overrides}).",
        "",
        f"{spec.num_trials} trials{spec.per_variant}{packs}, sampler `{spec.sampler.kind}`, "
        f"metric {metrics}; "
        f"yardstick {yardstick}; the search sees `{spec.search_constraints}` constraints. "
        f"Optuna study `{optuna_name}` in `{optuna_storage}`.",
        "",
        "Search space:",
        "",
        *search,
        *fixed,
    ]
    return "\n".join(lines) + "\n"
