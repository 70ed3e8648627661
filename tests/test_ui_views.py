"""The saved view of MLflow's experiment page that a study's comparison opens in: what it holds,
and that the installed MLflow's UI still reads the fields written (its format is the UI's own)."""

import json
import urllib.parse
from importlib.resources import files

from vaestudy.tracking.ui_views import (
    DEFLATE,
    SHARE_PARAM,
    VIEW_TAG_PREFIX,
    Chart,
    RunsView,
    Section,
    decode,
    encode,
    ui_state,
    view_url,
)

VIEW = RunsView(
    name="s: the runs that decided the answer",
    run_ids=("a1", "b2"),
    sections=(
        Section(
            "answer",
            (
                Chart(
                    "PARALLEL",
                    ("test/target/recon", "test/constraint/recon", "test/iwae_nll"),
                ),
                Chart("BAR", ("test/iwae_nll",)),
            ),
            columns=1,
        ),
        Section(
            "trajectories",
            (Chart("LINE", ("train/constraint/recon", "train/target/recon")),),
        ),
    ),
    group_by="vaestudy.variant",
)


def test_the_view_is_the_uis_envelope_around_its_compressed_state():
    value = json.loads(encode(VIEW, now_ms=5))
    assert value["name"] == VIEW.name and value["createdAt"] == value["updatedAt"] == 5
    assert value["state"].startswith(DEFLATE)
    state = decode(encode(VIEW))
    assert state == ui_state(VIEW)
    assert state["searchFilter"] == "attributes.run_id IN ('a1', 'b2')"
    assert state["runsHiddenMode"] == "SHOW_ALL"  # every run, not the UI's first ten
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "vaestudy.variant"}]
    sections, cards = state["compareRunSections"], state["compareRunCharts"]
    assert [(s["name"], s["columns"]) for s in sections] == [("answer", 1), ("trajectories", 3)]
    pcp, bar, line = cards
    assert pcp["type"] == "PARALLEL" and pcp["selectedParams"] == []
    assert pcp["selectedMetrics"] == ["test/target/recon", "test/constraint/recon",
                                      "test/iwae_nll"]  # fmt: skip
    assert bar["type"] == "BAR" and bar["metricKey"] == "test/iwae_nll"
    assert line["selectedMetricKeys"] == ["train/constraint/recon", "train/target/recon"]
    assert [c["metricSectionId"] for c in cards] == [sections[0]["uuid"]] * 2 + [
        sections[1]["uuid"]
    ]
    assert len({c["uuid"] for c in cards}) == 3
    assert decode(encode(VIEW)) == ui_state(VIEW)  # the same view, the same ids: saved again alike


def test_the_link_opens_the_saved_view_in_the_charts_mode():
    url = view_url("http://127.0.0.1:5000/", "7", "k1")
    page, _, query = url.partition("?")
    assert page == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert urllib.parse.parse_qs(query) == {
        SHARE_PARAM: ["k1"],
        "compareRunsMode": ["CHART"],
        "workflowType": ["machine_learning"],
    }
    assert view_url("", "7", "k1").startswith("#/experiments/7/runs?")


def _keys(value: object) -> set[str]:
    """Every key of every dict in `value`."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_the_installed_mlflow_ui_reads_the_fields_the_view_writes():
    """A canary for an MLflow upgrade: the UI's bundle names the tag prefix, the query parameter,
    the compression marker, every field of the state the view writes and the values it sets."""
    bundle = files("mlflow") / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="replace") for p in bundle.iterdir()
                   if p.name.endswith(".js"))  # fmt: skip
    state = ui_state(VIEW)
    needed = [VIEW_TAG_PREFIX, SHARE_PARAM, DEFLATE, "compareRunsMode", *sorted(_keys(state))]
    needed += ['PARALLEL="PARALLEL"', 'BAR="BAR"', 'LINE="LINE"', '"SHOW_ALL"', '"average"',
               'Tag="tag"']  # fmt: skip
    assert len(needed) > 30 and [n for n in needed if n not in text] == []
