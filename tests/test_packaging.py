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
PACKAGE_DATA = {"workbench/reference": ".csv", "workbench/study/shipped": ".yaml",
                "workbench/study/shipped/ladders": ".yaml", "workbench/search/shipped": ".yaml"}


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
    for shipped, top in (("workbench/study/shipped", "studies"), ("workbench/study/shipped/ladders", "studies/ladders"),
                         ("workbench/search/shipped", "search_spaces")):
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
            "from workbench.study.ladder import load_ladder\n"
            "row = lookup_published({'table': 'T6', 'row': 1})\n"
            "print(load_study('table6').name, load_space('mobilevit').name, load_ladder('cpu').name, row['top1'])\n")
    # Run away from the repository (cwd and path) so nothing but the installed wheel can be found.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); exec({code!r})",
                        str(target)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[:3] == ["table6", "mobilevit", "cpu"]


def _commands(lines: list[str]) -> list[str]:
    """Shell command lines without comments, blank lines or trailing comments."""
    out = []
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _readme_block(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return _commands(section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines())


def test_ci_runs_the_readmes_install_and_test_lines_exactly():
    install, test = _readme_block("Install"), _readme_block("Test")
    assert any("pip install" in c for c in install) and any(c.startswith("pytest") for c in test)
    ci = _commands((REPO / ".ci" / "run").read_text().splitlines())
    # Every README line, in order, as one contiguous run in CI, and no other install or test line there.
    steps = install + test
    starts = [i for i in range(len(ci)) if ci[i:i + len(steps)] == steps]
    assert starts, f".ci/run does not run the README's lines {steps} in order; it runs {ci}"
    others = ci[:starts[0]] + ci[starts[0] + len(steps):]
    extra = [c for c in others if any(w in c for w in ("pip ", "pytest", "ruff", "-m venv", "activate"))]
    assert not extra, f".ci/run installs or tests beyond the README: {extra}"
