"""The Streamlit app under Streamlit's AppTest: the chart, the filters, and the messages for unusable stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from dashboard_store import seeded_db
from streamlit.testing.v1 import AppTest

from workbench.dashboard import STORAGE_ENV
from workbench.engine.store import Store

APP = Path(__file__).resolve().parents[1] / "dashboards" / "pareto.py"


@pytest.fixture
def db(tmp_path_factory, tmp_path):
    copy = tmp_path / "studies.db"
    shutil.copy(seeded_db(tmp_path_factory.getbasetemp() / "dashboard-store"), copy)
    return copy


def run_app(monkeypatch, url: str) -> AppTest:
    monkeypatch.setenv(STORAGE_ENV, url)
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def bubble_chart(at: AppTest) -> dict:
    """The first Vega-Lite chart's spec and its data sets by the kind of point they hold."""
    charts = [e for e in at.main if getattr(e, "type", "") == "vega_lite_chart"]
    assert charts, "no chart on the page"
    proto = charts[0].proto
    frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in proto.datasets]
    kinds = {"measured": set(), "published": set(), "front": set()}
    for f in frames:
        if "order" in f:
            kinds["front"] |= set(f["variant_key"])
        elif "kind" in f and len(f):
            kinds[f["kind"].iloc[0]] |= set(f["variant_key"])
    return {"spec": json.loads(proto.spec), **kinds}


def test_chart_shows_measured_bubbles_published_points_and_the_front(monkeypatch, db):
    at = run_app(monkeypatch, f"sqlite:///{db}")
    chart = bubble_chart(at)
    assert chart["measured"] == {"alpha/a", "alpha/b", "alpha/c", "beta/p"}  # beta/q failed: no top-1
    assert chart["published"] == {"alpha/a", "alpha/b", "beta/p"}
    assert chart["front"] and chart["front"] <= chart["measured"]
    bubbles = next(layer for layer in chart["spec"]["layer"] if layer["encoding"].get("size", {}).get("field"))
    assert bubbles["encoding"]["x"]["field"] == "macs_paper"
    size = bubbles["encoding"]["size"]["scale"]
    assert size["zero"] is True and size["domain"][0] == 0 and size["range"][0] == 0  # area proportional to MACs
    tooltip = {t["title"] if "title" in t else t["field"] for t in bubbles["encoding"]["tooltip"]}
    assert {"model", "toggles", "params (M)", "paper MACs (M)", "top-1 % [95% CI]", "seeds"} <= tooltip
    assert {b.label for b in at.get("download_button")} == {"Points (CSV)", "Trials (CSV)", "Figure (PNG)",
                                                            "Figure (SVG)"}
    assert "8 trial(s)" in at.caption[0].value


@pytest.mark.slow
def test_filters_and_axis_change_what_is_shown(monkeypatch, db):
    at = run_app(monkeypatch, f"sqlite:///{db}")
    at.sidebar.multiselect(key="study").set_value(["beta"]).run()
    chart = bubble_chart(at)
    assert chart["measured"] == {"beta/p"} and chart["published"] == {"beta/p"}
    assert at.caption[0].value.startswith("1 study(ies), 2 trial(s)")
    trials = at.dataframe[1].value
    assert set(trials["study"]) == {"beta"}
    at.sidebar.multiselect(key="study").set_value(["alpha", "beta"]).run()
    at.sidebar.multiselect(key="family").set_value(["v3"]).run()
    assert bubble_chart(at)["measured"] == {"alpha/a", "alpha/b", "alpha/c"}
    at.sidebar.radio(key="x").set_value("params").run()
    layer = next(x for x in bubble_chart(at)["spec"]["layer"] if x["encoding"].get("size", {}).get("field"))
    assert layer["encoding"]["x"]["field"] == "params"


def test_ablation_table_and_curves_are_shown(monkeypatch, db):
    at = run_app(monkeypatch, f"sqlite:///{db}")
    tables = [d.value for d in at.dataframe if "noise?" in d.value.columns]
    assert len(tables) == 2  # alpha and beta
    alpha = tables[0].set_index("variant")
    assert alpha.loc["a", "noise?"] == "baseline" and alpha.loc["b", "Δ vs a (paired 95% CI)"].startswith("+4.50")
    assert any("failed: q seed 0" in w.value for w in at.warning)
    assert at.multiselect(key="curves").value  # some trials' learning curves are drawn by default
    curves = [e for e in at.main if getattr(e, "type", "") == "vega_lite_chart"]
    assert len(curves) == 2


def _empty_optuna_store(path: Path) -> None:
    Store(f"sqlite:///{path}").engine.dispose()


@pytest.mark.parametrize("make, says", [
    (lambda p: None, "no study store at"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (_empty_optuna_store, "holds no trials yet"),
])
def test_missing_or_empty_store_says_so(monkeypatch, tmp_path, make, says):
    path = tmp_path / "studies.db"
    make(path)
    at = run_app(monkeypatch, f"sqlite:///{path}")
    assert says in at.info[0].value
    assert not at.error and not [e for e in at.main if getattr(e, "type", "") == "vega_lite_chart"]


@pytest.mark.parametrize("url, says", [
    ("corrupt", "not a readable SQLite file"),
    ("sqlite:////no/such/folder/studies.db", "does not exist"),
    ("nonsense://host/db", "no database driver"),
])
def test_corrupt_store_or_bad_url_is_an_error_on_the_page(monkeypatch, tmp_path, url, says):
    if url == "corrupt":
        path = tmp_path / "studies.db"
        path.write_bytes(b"this is not a database, it only has its name " * 50)
        url = f"sqlite:///{path}"
    at = run_app(monkeypatch, url)
    assert says in at.error[0].value and at.error[0].value.startswith("Cannot show this store")
