"""What a study's parent run remembers of how it was started, and how `--resume` uses it.

The parent run carries the study file (absolute path), a SHA-256 of its text and the `--set`
overrides (`--trials N` is the override `study.num_trials=N`), as tags. `vaestudy run FILE
--resume` takes the overrides from there, so a resumed study is the study that was started:
overrides given again must agree with the remembered ones (a message lists what differs), and a
file changed since the start is refused, since trials already run would no longer belong to it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

from vaestudy.config.run import parse_overrides
from vaestudy.errors import ConfigError, UserError
from vaestudy.study.spec import Study, load_study

TAG_FILE = "vaestudy.study_file"
TAG_SHA = "vaestudy.study_sha256"
TAG_OVERRIDES = "vaestudy.overrides"  # a JSON list of KEY=VALUE strings
_MISSING = object()


def file_sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def remembered(study: Study) -> dict[str, str]:
    """The tags a study's parent run carries so that `--resume` can run the same study."""
    return {
        TAG_FILE: str(Path(study.source).resolve()),
        TAG_SHA: file_sha(study.source),
        TAG_OVERRIDES: json.dumps(study.overrides),
    }


def resume_command(study: Study) -> str:
    """A command that continues `study` (the overrides are remembered, but spelling them out
    keeps the command working whatever store it is read from)."""
    sets = [f"--set {shlex.quote(o)}" for o in study.overrides]
    return " ".join(["vaestudy run", shlex.quote(study.source), *sets, "--resume"])


def merged_overrides(stored: list[str], given: list[str], source: str) -> list[str]:
    """The remembered overrides, after checking that each override given again agrees."""
    before, now = parse_overrides(stored), parse_overrides(given)
    differ = [
        f"{key}: started with {_shown(before, key)}, now {value!r}"
        for key, value in now.items()
        if before.get(key, _MISSING) != value
    ]
    if differ:
        raise ConfigError(
            f"{source}: --resume continues the study as it was started; these overrides differ "
            f"from the start's ({' '.join(stored) or 'none'}):\n"
            + "\n".join(f"  - {d}" for d in differ)
            + "\nleave them out (the start's are remembered) or start a new run without --resume"
        )
    return stored


def _shown(values: dict[str, Any], key: str) -> str:
    return "the file's value" if key not in values else repr(values[key])


def resume_overrides(path: str, given: list[str], tracking_uri: str | None) -> list[str]:
    """The overrides `--resume` runs `path`'s study with: those its newest parent run
    remembers (checked against `given` and the file), or `given` for a run that remembers none."""
    from mlflow.tracking import MlflowClient

    from vaestudy.tracking.runs import latest_study_run
    from vaestudy.tracking.stores import check_server, sqlite_file, store_uri

    name = load_study(path, given).name
    backend = store_uri(tracking_uri)
    if (database := sqlite_file(backend)) is not None and not database.is_file():
        raise UserError(f"--resume: no earlier run of study {name!r}: {backend} does not exist")
    if backend.startswith(("http://", "https://")):
        check_server(backend)
    client = MlflowClient(backend)
    experiment = client.get_experiment_by_name(name)
    parent = experiment and latest_study_run(client, experiment.experiment_id, name)
    if not parent:
        raise UserError(f"--resume: no earlier run of study {name!r} at {backend}")
    tags = parent.data.tags
    if TAG_OVERRIDES not in tags:
        return given
    if tags.get(TAG_SHA) != file_sha(path):
        raise ConfigError(
            f"{path}: changed since study {name!r} was started from {tags.get(TAG_FILE)} (run "
            f"{parent.info.run_id}); --resume runs the study as it was: restore the file, or "
            "start a new run without --resume"
        )
    return merged_overrides(json.loads(tags[TAG_OVERRIDES]), given, path)
