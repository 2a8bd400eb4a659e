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


@pytest.fixture
def single_thread():
    """Tiny forward passes run fastest on one thread, and do not stall when other processes load the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
