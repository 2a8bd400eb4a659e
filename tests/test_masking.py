"""No password is ever printed: storage URLs in messages are masked, and so are libraries' messages about them."""

from __future__ import annotations

import pytest

from workbench.cli import main
from workbench.errors import masked_url, scrubbed


@pytest.mark.parametrize("url,shown", [
    ("postgresql://ann:hunter2@db/studies", "postgresql://ann:***@db/studies"),
    ("postgresql+psycopg://ann:s%2Fx@h:5432/d?sslmode=require", "postgresql+psycopg://ann:***@h:5432/d?sslmode=require"),
    ("postgresql://ann:p@ss/w@h/d", "postgresql://ann:***@h/d"),  # an unencoded password with '@' and '/'
    ("postgresql://ann@h/d", "postgresql://ann@h/d"),
    ("sqlite:///a/b.db", "sqlite:///a/b.db"),
    ("garbage://::", "garbage://::"),
])
def test_masked_url(url, shown):
    assert masked_url(url) == shown
    assert "hunter2" not in scrubbed(f"cannot connect to {url!r} (password=hunter2 rejected)", url) or \
        "hunter2" not in url


@pytest.mark.parametrize("argv", [
    ["results", "--study", "s"],
    ["ablate", "--study", "table6"],
])
def test_an_unreachable_store_is_one_line_without_the_password(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    url = "postgresql://ann:hunter2@127.0.0.1:1/studies"  # port 1: refused at once
    code = main([*argv, "--storage", url])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    # the password on the command line is warned about first (one line, without it), then the one error line
    assert code == 2 and len(lines) == 2 and lines[0].startswith("workbench: warning:") and "process list" in lines[0]
    assert "hunter2" not in out + err and "ann:***@127.0.0.1:1" in lines[1]


def test_the_password_mask_replaces_the_field_not_every_occurrence():
    url = "postgresql+psycopg://ann:p@db:5432/studies"
    text = (f"(psycopg.OperationalError) connection to {url} failed; conninfo password=p user=ann; "
            "postgresql+psycopg://ann:p@db:5432/studies")
    got = scrubbed(text, url)
    assert "psycopg.OperationalError" in got and "ann:p@" not in got and "password=***" in got
    assert got.count("ann:***@db:5432/studies") == 2
    encoded = "postgresql://bob:s%2Fx%40y@h/d"  # the driver may say the password decoded: s/x@y
    assert "s/x@y" not in scrubbed("login bob:s/x@y@h refused", encoded)
    assert scrubbed("a plain message", url) == "a plain message"


@pytest.mark.parametrize("argv", [["results", "--study", "s"], ["report", "--study", "s", "--out", "r"]])
def test_storage_env_names_a_variable_holding_the_url(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("MY_STORE", "postgresql://ann:hunter2@127.0.0.1:1/studies")
    code = main([*argv, "--storage-env", "MY_STORE"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ann:***@127.0.0.1:1" in err[0] and "hunter2" not in err[0], err
    assert main([*argv, "--storage-env", "UNSET_STORE_VAR"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--storage-env 'UNSET_STORE_VAR': the environment variable is not set" in err[0]
    assert main([*argv, "--storage-env", "MY_STORE", "--storage", "sqlite:///x.db"]) == 2
    assert "not both" in capsys.readouterr().err
