"""The wheel carries every file the code loads by package path, and its shipped copies equal the
repository's; an installed wheel finds the shipped study and search-space files by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Folders whose files the code reads through the package (importlib.resources or Path(__file__)).
PACKAGE_DATA = {"workbench/reference": ".csv", "workbench/study/shipped": ".yaml", "workbench/search/shipped": ".yaml"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel a fresh clone builds: the files git knows (tracked, or new and not ignored), copied to a clean
    folder, so no egg-info or build/ left by an editable install can add what pyproject.toml leaves out."""
    src, out = tmp_path_factory.mktemp("clone"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return next(out.glob("workbench-*.whl"))


def test_the_wheel_holds_every_data_file_the_code_loads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, suffix in PACKAGE_DATA.items():
        files = sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).glob(f"*{suffix}"))
        assert files, folder
        missing = [f for f in files if f not in names]
        assert not missing, f"not in the wheel: {missing}"


def test_shipped_copies_equal_the_repository_files():
    for shipped, top in (("workbench/study/shipped", "studies"), ("workbench/search/shipped", "search_spaces")):
        ours = sorted(p.name for p in (REPO / top).glob("*.yaml"))
        assert ours == sorted(p.name for p in (REPO / shipped).glob("*.yaml")), (top, shipped)
        for name in ours:
            assert (REPO / top / name).read_text() == (REPO / shipped / name).read_text(), name


def test_an_installed_wheel_finds_studies_spaces_and_reference_tables_by_name(wheel, tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    code = ("import workbench, sys\n"
            "assert workbench.__file__.startswith(sys.argv[1]), workbench.__file__\n"
            "from workbench.study.files import load_study\n"
            "from workbench.search.space import load_space\n"
            "from workbench.study.published import lookup_published\n"
            "row = lookup_published({'table': 'T6', 'row': 1})\n"
            "print(load_study('table6').name, load_space('mobilevit').name, row['top1'])\n")
    # Run away from the repository (cwd and path) so nothing but the installed wheel can be found.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); exec({code!r})",
                        str(target)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[:2] == ["table6", "mobilevit"]
