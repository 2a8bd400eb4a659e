"""The chart data (points, published points, front) and the read-only store behind the dashboard and report."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import sqlalchemy as sa
from dashboard_store import ALPHA_TOP1, seeded_db

from workbench.dashboard.chart_data import ablation_frame, front, plotted
from workbench.dashboard.readonly import ReadOnlyStore, StoreProblem, read_chart_data
from workbench.engine.store import Store
from workbench.study.results import build_table
from workbench.study.tables import table_cells


@pytest.fixture
def db(tmp_path_factory, tmp_path):
    """A private copy of the shared seeded store (tests may not alter the original)."""
    copy = tmp_path / "studies.db"
    shutil.copy(seeded_db(tmp_path_factory.getbasetemp() / "dashboard-store"), copy)
    return copy


def test_one_point_per_variant_with_mean_interval_and_seeds(db):
    data = read_chart_data(f"sqlite:///{db}")
    points = data.points.set_index("variant_key")
    assert list(points.index) == ["alpha/a", "alpha/b", "alpha/c", "beta/p", "beta/q"]
    assert points.loc["alpha/a", "top1"] == pytest.approx((ALPHA_TOP1[("a", 0)] + ALPHA_TOP1[("a", 1)]) / 2)
    assert points.loc["alpha/a", "top1_low"] < points.loc["alpha/a", "top1"] < points.loc["alpha/a", "top1_high"]
    assert points.loc["alpha/a", "seeds"] == "0, 1"
    # c/seed1 is still running: one seed, no interval; q failed: no top-1 at all, so it is not plotted.
    assert points.loc["alpha/c", "n_seeds"] == 1 and points.loc["alpha/c", "n_running"] == 1
    assert points.loc["beta/q", "n_failed"] == 1
    assert "beta/q" not in set(plotted(data.points, "macs_paper")["variant_key"])
    assert points.loc["alpha/b", "toggles"].endswith("block.fusion_conv=3x3")
    assert set(points["family"]) == {"v1", "v3"}


def test_points_agree_with_the_results_table(db):
    """The chart and `workbench results` read the same build_table rows."""
    url = f"sqlite:///{db}"
    data = read_chart_data(url)
    table = build_table(Store(url, create=False), "alpha")
    points = data.points[data.points["study"] == "alpha"].set_index("variant")
    for row in table.rows:
        assert points.loc[row["variant"], "params"] * 1e6 == pytest.approx(row["params"])
        assert points.loc[row["variant"], "macs_paper"] * 1e6 == pytest.approx(row["macs"]["paper"])
        assert points.loc[row["variant"], "top1"] == pytest.approx(row["top1_mean"])
    assert ablation_frame(data.tables[("alpha", table.config["id"])]).values.tolist() == table_cells(table, "✓")[1]


def test_published_points_use_printed_figures_and_counts_of_the_spec_otherwise(db):
    data = read_chart_data(f"sqlite:///{db}")
    pub = data.published.set_index("variant_key")
    points = data.points.set_index("variant_key")
    assert set(pub.index) == {"alpha/a", "alpha/b", "beta/p"}
    assert pub.loc["alpha/a", "top1"] == 73.7  # Table 6 row 1: top-1 only
    assert pub.loc["alpha/a", "macs_paper"] == points.loc["alpha/a", "macs_paper"]
    assert pub.loc["beta/p", "params"] == 1.3 and pub.loc["beta/p", "macs_paper"] == 364  # Table 2 prints both
    assert pub.loc["beta/p", "macs_fvcore"] == points.loc["beta/p", "macs_fvcore"]  # never published


def test_front_keeps_exactly_the_non_dominated_points(db):
    data = read_chart_data(f"sqlite:///{db}").select(studies=["alpha"])
    # a (fewest MACs), c (more MACs, better than a), b (most MACs, best): every one is on the front.
    assert list(front(data.points, "macs_paper")["variant"]) == ["a", "c", "b"]
    data = read_chart_data(f"sqlite:///{db}")
    # beta/p is smaller than every alpha point but worse than none of them at its size: on the front too;
    # nothing that is both larger and less accurate than another point may be.
    best = front(data.points, "macs_paper")
    shown = plotted(data.points, "macs_paper")
    for _, p in best.iterrows():
        assert not ((shown["macs_paper"] <= p["macs_paper"]) & (shown["top1"] > p["top1"])).any()
    assert list(best["macs_paper"]) == sorted(best["macs_paper"])


def test_filters_narrow_every_frame(db):
    data = read_chart_data(f"sqlite:///{db}")
    beta = data.select(families=["v1"])
    assert set(beta.points["study"]) == {"beta"} and set(beta.trials["study"]) == {"beta"}
    assert set(beta.published["variant_key"]) == {"beta/p"}
    assert set(beta.curves["trial_key"]) == {"beta #0"}
    assert [k[0] for k in beta.tables] == ["beta"]


def test_learning_curves_come_from_history_or_live_reports(db):
    curves = read_chart_data(f"sqlite:///{db}").curves
    done = curves[curves["trial_key"] == "alpha #0"]
    assert list(done["epoch"]) == [1, 2, 3] and set(done["source"]) == {"history"}
    assert done["top1"].iloc[-1] == ALPHA_TOP1[("a", 0)]
    running = curves[curves["trial_key"] == "alpha #5"]  # c/seed1: two live reports, no history yet
    assert list(running["epoch"]) == [1, 2] and set(running["source"]) == {"live"}


def test_reader_never_writes_and_holds_no_lock(db):
    before = db.read_bytes()
    store = ReadOnlyStore(f"sqlite:///{db}")
    store.records("alpha")
    with pytest.raises(sa.exc.OperationalError, match="readonly database"), store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE studies SET study_name = study_name"))
    # A writer with no patience at all can take the write lock and checkpoint the whole WAL: no reader
    # left a transaction or a snapshot open.
    con = sqlite3.connect(db, timeout=0)
    con.execute("BEGIN IMMEDIATE")
    con.execute("COMMIT")
    busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    con.close()
    assert busy == 0
    store.change_marker()
    assert db.read_bytes() == before


def test_reader_works_while_a_writer_holds_its_transaction(db):
    writer = sqlite3.connect(db, timeout=0)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE trial_user_attributes SET value_json = value_json WHERE trial_user_attribute_id = 1")
    try:
        data = read_chart_data(f"sqlite:///{db}")  # WAL: the reader sees the last commit, no waiting
        assert len(data.trials) == 8
    finally:
        writer.execute("COMMIT")
        writer.close()


def test_change_marker_moves_when_a_trial_reports(db):
    store = ReadOnlyStore(f"sqlite:///{db}")
    before = store.change_marker()
    writer = Store(f"sqlite:///{db}", create=False)
    running = next(r for r in writer.records("alpha") if r.state == "RUNNING")
    trial_id = writer.load_study("alpha").trials[running.number]._trial_id
    writer.report(trial_id, 3, 33.0)
    writer.engine.dispose()
    assert store.change_marker() != before


@pytest.mark.parametrize("content, kind", [(b"", "empty"), (b"not a database " * 100, "corrupt")])
def test_empty_or_corrupt_file_is_named_and_left_alone(tmp_path, content, kind):
    path = tmp_path / "studies.db"
    path.write_bytes(content)
    with pytest.raises(StoreProblem) as e:
        ReadOnlyStore(f"sqlite:///{path}")
    assert e.value.kind == kind and str(path) in str(e.value)
    assert path.read_bytes() == content


def test_truncated_store_is_corrupt(db, tmp_path):
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file, then cut it short
    con.close()
    cut = tmp_path / "cut.db"
    cut.write_bytes(db.read_bytes()[: len(db.read_bytes()) // 3])
    with pytest.raises(StoreProblem) as e:
        read_chart_data(f"sqlite:///{cut}")
    assert e.value.kind == "corrupt"


def test_missing_store_is_not_created(tmp_path):
    path = tmp_path / "nothing.db"
    with pytest.raises(StoreProblem) as e:
        ReadOnlyStore(f"sqlite:///{path}")
    assert e.value.kind == "missing" and not path.exists()


@pytest.mark.parametrize("url", ["nonsense://x", "sqlite://", "sqlite:////no/such/folder/s.db", "::"])
def test_bad_urls_are_named(url):
    with pytest.raises(StoreProblem) as e:
        ReadOnlyStore(url)
    assert e.value.kind == "bad-url"


def test_the_console_table_fits_120_columns_unless_wide(db):
    from workbench.study.tables import render_console

    table = build_table(ReadOnlyStore(f"sqlite:///{db}"), "alpha")
    narrow, wide = render_console(table), render_console(table, wide=True)
    assert max(len(line) for line in narrow.splitlines()) <= 120
    assert "fvcore MACs (M)" in wide and "conv-3x3" in wide.splitlines()[1]
    assert "block" in narrow and "3x3 = conv-3x3" in narrow and "--wide shows every column" in narrow
    assert max(len(line) for line in wide.splitlines()) > 120
