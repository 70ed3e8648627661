"""Stop search trials that cannot become feasible: a Ray Tune `Stopper` (`study.stop_hopeless`).

The rule, on the validation split, at each evaluation a trial reports: let p be the fraction of
its training steps done, and for each of its constraints c (the search's constraint values,
`vaestudy.training.feasibility.search_constraints`: `own` and each `yardstick:<rule>`, in the
constraint's units, > 0 violated) m_c(p) its margin now. Over the trials of this session that
reached their end, R_c(p) is the most any of them recovered from the same point: for trial j,
its margin at its last evaluation at or before p less its final margin; R_c(p) = the largest of
those (at least 0). The trial is **hopeless** when m_c(p) > R_c(p) for some c: it misses c by
more than any trial of this study ever made up in the training that remained. Nothing is
stopped before `min_ended` trials have ended (the recoveries seen are too few to bound anything)
or before `after` of the training (the first evaluations move fastest).

A stopped trial keeps its MLflow run (closed KILLED with `vaestudy.stopped_early` = the reason,
not selectable) and is told to the sampler as infeasible, with its last evaluation's values and
constraint values and the reason (`vaestudy.study.search`: the searcher reads `stopped`). A pack
(`study.pack`) is one Tune trial: it stops when every member still training is hopeless.

Confirmation runs are never stopped: their seeds measure the selected configuration in full.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

from ray.tune.stopper import Stopper

from vaestudy.config.dotted import unprefixed
from vaestudy.study.report_keys import DIVERGED, PROGRESS, member_key, member_prefix
from vaestudy.study.spec import Study
from vaestudy.training.feasibility import WORST, search_constraints


class HopelessStopper(Stopper):
    """See the module doc. `stopped`: Tune trial id (a pack member's key for a pack) -> the
    reason it was stopped, which the search reads when Tune ends the trial."""

    def __init__(self, study: Study) -> None:
        spec = study.spec.stop_hopeless
        assert spec is not None
        self.after, self.min_ended = spec.after, spec.min_ended
        self.rules = study.spec.constraints
        self.tracks: dict[str, list[tuple[float, dict[str, float]]]] = {}  # key -> (p, margins)
        # per ended trial, from each of its evaluations: (p, margin then − final margin)
        self.recoveries: list[list[tuple[float, dict[str, float]]]] = []
        self.stopped: dict[str, str] = {}

    def margins(self, result: dict[str, Any]) -> dict[str, float]:
        """A report's constraint margins (the `saturated` count is not a margin)."""
        val = unprefixed(result, "val/")
        out = search_constraints("both", val, self.rules)
        out.pop("saturated", None)
        return {c: m for c, m in out.items() if abs(m) < WORST}

    def observe(self, key: str, result: dict[str, Any]) -> str | None:
        """Take one member's report; the reason it is hopeless, if it is."""
        if result.get(DIVERGED):
            self.tracks.pop(key, None)
            return None
        progress = result.get(PROGRESS)
        if progress is None:
            return None
        margins = self.margins(result)
        track = self.tracks.setdefault(key, [])
        if progress >= 1.0:  # its end: what it recovered from each of its evaluations
            if DIVERGED in result:  # (a pack's member reports it at every evaluation)
                recovered = [
                    (p, {c: m[c] - margins[c] for c in m if c in margins}) for p, m in track
                ]
                self.recoveries.append(recovered)
            self.tracks.pop(key, None)
            return None
        track.append((progress, margins))
        if len(self.recoveries) < self.min_ended or progress < self.after:
            return None
        return self.why(progress, margins)

    def why(self, progress: float, margins: dict[str, float]) -> str | None:
        """The reason a trial at `progress` with `margins` is hopeless (None: it is not)."""
        best: dict[str, float] = {}
        for recovered in self.recoveries:  # from its last evaluation at or before `progress`
            at = bisect.bisect_right([p for p, _ in recovered], progress) - 1
            for c, r in recovered[at][1].items() if at >= 0 else ():
                best[c] = max(best.get(c, 0.0), r)
        for c, m in margins.items():
            if m > best.get(c, 0.0) and m > 0:
                return (
                    f"hopeless: {c} misses by {m:.3g} at {progress:.0%} of training; the most "
                    f"any of {len(self.recoveries)} ended trials recovered from there is "
                    f"{best.get(c, 0.0):.3g}"
                )
        return None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        members = list(itertools.takewhile(
            lambda k: f"{member_prefix(k)}{PROGRESS}" in result, itertools.count()
        ))  # fmt: skip
        if not members:  # a single trial
            reasons = {trial_id: self.observe(trial_id, result)}
        else:
            reasons = {
                member_key(trial_id, k): self.observe(
                    member_key(trial_id, k), unprefixed(result, member_prefix(k))
                )
                for k in members
                if not result.get(f"{member_prefix(k)}{DIVERGED}")
            }
        if not reasons or None in reasons.values():
            return False
        self.stopped |= {key: reason for key, reason in reasons.items() if reason}
        return True

    def stop_all(self) -> bool:
        return False
