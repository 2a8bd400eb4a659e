"""`workbench report` and the CLI's dashboard/report errors: one line, exit 2, nothing half-written."""

from __future__ import annotations

import shutil
import socket
import sqlite3

import pytest
from dashboard_store import seeded_db

from workbench.cli import main


@pytest.fixture
def db(tmp_path_factory, tmp_path):
    copy = tmp_path / "studies.db"
    shutil.copy(seeded_db(tmp_path_factory.getbasetemp() / "dashboard-store"), copy)
    return copy


def test_report_writes_figure_table_and_points(db, tmp_path, capsys):
    out = tmp_path / "figures" / "alpha"
    assert main(["report", "--study", "alpha", "--out", str(out), "--storage", f"sqlite:///{db}"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["alpha_ablation.png", "alpha_ablation.svg", "alpha_pareto.png", "alpha_pareto.svg",
                     "alpha_points.csv", "alpha_report.md"]
    ablation = (out / "alpha_ablation.svg").read_text()
    assert "paper's Δ" in ablation and "measured Δ (95% CI)" in ablation
    assert capsys.readouterr().out.split() == [str(out / n) for n in
                                               ("alpha_pareto.png", "alpha_pareto.svg", "alpha_ablation.png",
                                                "alpha_ablation.svg", "alpha_report.md", "alpha_points.csv")]
    from PIL import Image

    with Image.open(out / "alpha_pareto.png") as im:
        assert im.format == "PNG" and im.width > 1500  # 300 dpi, print size
    svg = (out / "alpha_pareto.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Pareto front (measured)" in svg
    md = (out / "alpha_report.md").read_text()
    assert "![alpha: top-1 against MACs (M), paper counter](alpha_pareto.svg)" in md
    assert "![alpha: deltas against a](alpha_ablation.svg)" in md
    assert "| a |" in md and "| b |" in md and "+4.50 ± " in md  # the results table with the paired delta
    assert "Pareto front (fewer MACs, higher top-1): a (7.14M MACs, 51.00%), c (" in md
    points = (out / "alpha_points.csv").read_text().splitlines()
    assert len(points) == 4 and points[0].startswith("variant_key,study,")


def test_report_axis_and_colour_options(db, tmp_path):
    out = tmp_path / "r"
    assert main(["report", "--study", "beta", "--out", str(out), "--storage", f"sqlite:///{db}", "--x", "params",
                 "--colour-by", "family"]) == 0
    md = (out / "beta_report.md").read_text()
    assert "Parameters (M)" in md and "Pareto front (fewer params, higher top-1): p (" in md
    assert "1 variant(s) have no completed trial yet" in md  # q failed


@pytest.mark.slow  # seconds: the fast lane stays under 2 minutes; CI runs it
def test_report_rewrites_its_files_in_place(db, tmp_path):
    out = tmp_path / "r"
    for _ in range(2):
        assert main(["report", "--study", "alpha", "--out", str(out), "--storage", f"sqlite:///{db}"]) == 0
    assert len(list(out.iterdir())) == 6  # no temporary files left behind


@pytest.mark.parametrize("storage, message", [
    ("nonsense://x", "no database driver"),
    ("sqlite:////no/such/folder/s.db", "does not exist"),
    ("corrupt", "not a readable SQLite file"),
    ("missing", "no study store at"),
    ("seeded", "study 'gamma' is not in"),
])
def test_report_errors_are_one_line_exit_2_and_write_nothing(db, tmp_path, capsys, storage, message):
    if storage == "corrupt":
        bad = tmp_path / "bad.db"
        bad.write_bytes(b"\x00garbage" * 500)
        storage = f"sqlite:///{bad}"
    elif storage == "missing":
        storage = f"sqlite:///{tmp_path / 'none.db'}"
    elif storage == "seeded":
        storage = f"sqlite:///{db}"
    out = tmp_path / "out"
    assert main(["report", "--study", "gamma", "--out", str(out), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_report_out_that_is_a_file_is_refused(db, tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_text("keep me")
    assert main(["report", "--study", "alpha", "--out", str(out), "--storage", f"sqlite:///{db}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and out.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["--storage", "sqlite:////no/such/folder/s.db"], "does not exist"),
    (["--storage", "not a url"], "not a SQLAlchemy URL"),
    (["--port", "70000"], "expected 1-65535"),
    (["--storage", "garbage://::"], "not a SQLAlchemy URL"),  # a port that is not a number
])
def test_dashboard_bad_options_are_one_line_exit_2(capsys, args, message):
    assert main(["dashboard", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 32, "not a readable SQLite file"),
    (None, "not a study store (no Optuna tables)"),
])
def test_dashboard_on_a_file_that_is_not_a_study_store_is_refused_before_streamlit(capsys, tmp_path, content,
                                                                                  message):
    # The page could only ever show the error: say it in one line instead of starting a server for it.
    path = tmp_path / "x.db"
    if content is None:
        sqlite3.connect(path).execute("CREATE TABLE t (a)").connection.commit()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    assert main(["dashboard", "--storage", f"sqlite:///{path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and message in err and err.count("\n") == 1
    assert path.read_bytes() == before


def test_dashboard_port_in_use_is_refused_before_streamlit_starts(capsys, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["dashboard", "--port", str(port), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    assert f"--port {port}: cannot listen there" in capsys.readouterr().err
