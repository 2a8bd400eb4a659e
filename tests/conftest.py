"""Shared test helpers: the packaged reference CSV and a tiny model factory."""

from __future__ import annotations

import csv
from importlib import resources

import pytest


def reference_rows() -> dict[str, dict]:
    with resources.files("workbench").joinpath("reference/presets.csv").open() as f:
        return {r["preset"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="session")
def presets_csv() -> dict[str, dict]:
    return reference_rows()
