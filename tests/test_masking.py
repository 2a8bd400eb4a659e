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
    assert "hunter2" not in scrubbed(f"cannot connect to {url!r} (password hunter2 rejected)", url) or \
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
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "hunter2" not in out + err and "ann:***@127.0.0.1:1" in err
