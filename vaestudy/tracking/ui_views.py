"""A saved view of MLflow's experiment page: chosen runs, grouped, with chosen charts.

MLflow's UI has no URL parameter that picks a chart's axes: its compare page takes the first
three differing params in alphabetical order and the first metric in the runs' logging order.
What it does have is the experiment page's *saved views* (its "Share" button): the page's whole
state (the runs filter, the grouping, the chart sections and cards) stored as an experiment tag
`mlflow.sharedViewState.<key>` and opened by `#/experiments/<id>/runs?viewStateShareKey=<key>`.
`share_view` writes one, in the envelope the UI writes (`{name, createdAt, updatedAt, state}`,
the state JSON zlib-compressed and base64-encoded behind `deflate;`), so a study's comparison opens
in one link with its axes set. That state is the UI's own format, not a documented API:
`tests/test_ui_views.py` checks that the installed MLflow's UI still names every field written
here; a UI that no longer reads them opens its plain runs page with a notice.

`RunsView` says what to show in terms of runs and metric keys; `ui_state` turns it into the UI's
state; nothing here imports MLflow (`share_view` is passed a client).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mlflow import MlflowClient

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # the UI's experiment tag of a saved view
SHARE_PARAM = "viewStateShareKey"  # the experiment page's query parameter that opens one
DEFLATE = "deflate;"  # the UI's marker of a compressed state
ChartKind = Literal["PARALLEL", "BAR", "LINE"]


@dataclass(frozen=True)
class Chart:
    """One card: a parallel-coordinates plot of `metrics` (the last one colours the lines), a
    bar chart of the last value of `metrics[0]`, or a line chart of every metric in `metrics`
    against the step."""

    kind: ChartKind
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class Section:
    """A titled row of cards, `columns` of them side by side."""

    name: str
    charts: tuple[Chart, ...]
    columns: int = 3


@dataclass(frozen=True)
class RunsView:
    """`run_ids` (the page's filter), grouped by the tag `group_by` (a line per group: the mean,
    with the min..max band), its `sections` first, in order, above MLflow's own charts."""

    name: str
    run_ids: tuple[str, ...]
    sections: tuple[Section, ...]
    group_by: str | None = None


def _uuid(*names: str) -> str:
    """A card's or section's id: the same view gives the same ids (sharing again is a no-op)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(names)))


def _card(chart: Chart, section_id: str) -> dict[str, object]:
    """The UI's card of `chart` (it titles a card by its metrics)."""
    base = {
        "uuid": _uuid(section_id, chart.kind, *chart.metrics),
        "type": chart.kind,
        "metricSectionId": section_id,
        "isGenerated": False,
        "deleted": False,
        "runsCountToCompare": 100,
    }
    if chart.kind == "PARALLEL":
        return base | {"selectedParams": [], "selectedMetrics": list(chart.metrics),
                       "showAllRuns": True}  # fmt: skip
    if chart.kind == "BAR":
        return base | {"metricKey": chart.metrics[0]}
    return base | {
        "metricKey": chart.metrics[0],
        "selectedMetricKeys": list(chart.metrics),
        "xAxisKey": "step",
        "scaleType": "linear",
        "lineSmoothness": 0,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
    }


def ui_state(view: RunsView) -> dict[str, object]:
    """The experiment page's state that shows `view`."""
    runs = ", ".join(f"'{r}'" for r in view.run_ids)
    sections, cards = [], []
    for section in view.sections:
        sid = _uuid(view.name, section.name)
        sections.append({"uuid": sid, "name": section.name, "display": True, "isReordered": True,
                         "deleted": False, "isGenerated": False,
                         "columns": section.columns})  # fmt: skip
        cards += [_card(chart, sid) for chart in section.charts]
    state: dict[str, object] = {
        "searchFilter": f"attributes.run_id IN ({runs})",
        "runsHiddenMode": "SHOW_ALL",  # the UI's default charts only the first 10 runs
        "compareRunCharts": cards,
        "compareRunSections": sections,
        "isAccordionReordered": True,  # keep these sections first, in this order
        "hideEmptyCharts": True,
        "useGroupedValuesInCharts": True,
    }
    if view.group_by:
        state["groupBy"] = {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": view.group_by}],
        }
    return state


def encode(view: RunsView, now_ms: int | None = None) -> str:
    """The tag value of `view`: the UI's saved-view envelope around its compressed state."""
    raw = json.dumps(ui_state(view), separators=(",", ":")).encode()
    state = DEFLATE + base64.b64encode(zlib.compress(raw, 9)).decode()
    at = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"name": view.name, "createdAt": at, "updatedAt": at, "state": state})


def decode(value: str) -> dict[str, object]:
    """The UI state inside a saved view's tag value (`encode`'s inverse)."""
    state = json.loads(value)["state"]
    return json.loads(zlib.decompress(base64.b64decode(state.removeprefix(DEFLATE))))


def share_view(client: MlflowClient, experiment_id: str, key: str, view: RunsView) -> None:
    """Save `view` on the experiment under `key` (letters, digits, `-`, `_`), replacing an
    earlier one of that key."""
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, encode(view))


def view_url(server: str, experiment_id: str, key: str) -> str:
    """The link that opens the saved view `key`, in the charts mode and the model-training view;
    `server` "" gives it relative to the UI, as a run's description can hold it."""
    query = urllib.parse.urlencode({SHARE_PARAM: key, "compareRunsMode": "CHART",
                                    "workflowType": "machine_learning"})  # fmt: skip
    page = f"#/experiments/{experiment_id}/runs?{query}"
    return f"{server.rstrip('/')}/{page}" if server else page
