"""A shared machine's robustness and security: damaged and deep image folders, 16-bit images, the DataLoader's
CPU share; YAML that expands past a megabyte; names that would climb out of their folder; someone else's Ray
records; passwords kept off the command line and masked by field; the dashboard showing stored text as text;
reading a finished store on a read-only medium; failed trials' checkpoints; errors that stay one line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.cli import main
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": "0.25", "layer3.depth": "1", "layer4.depth": "1", "layer5.depth": "1",
        "layer3.attn_width": "0.5", "layer4.attn_width": "0.5", "layer5.attn_width": "0.5"}


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def _cli(argv: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *argv], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("data path:")]
    assert len(lines) == 1 and lines[0].startswith("workbench: error:"), err[-3000:]
    return lines[0]


# --- image folders as users have them -----------------------------------------------------------------------
def write_png16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (colour type 2, bit depth 16), written by hand: PIL writes none."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_jpeg(path: Path, seed: int, size: int = 40) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)


PNG16 = np.stack([np.full((40, 40), 65535), np.full((40, 40), 32896), np.zeros((40, 40))], -1).astype(np.uint16)


def user_folder(root: Path, train: int = 6, val: int = 3) -> Path:
    """Two classes of JPEGs, plus what users' folders hold: a truncated JPEG (train/a), a 16-bit PNG (val/b)
    and a class whose images sit in sub-folders (train/b/more/, val/b/deeper/x/)."""
    for split, n in (("train", train), ("val", val)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                write_jpeg(d / f"{i}.jpg", seed=hash((split, c, i)) % 1000)
    (root / "train" / "b" / "more").mkdir()
    for i in range(3):
        write_jpeg(root / "train" / "b" / "more" / f"n{i}.jpg", seed=500 + i)
    (root / "val" / "b" / "deeper" / "x").mkdir(parents=True)
    write_jpeg(root / "val" / "b" / "deeper" / "x" / "n.jpg", seed=600)
    data = (root / "train" / "a" / "0.jpg").read_bytes()
    (root / "train" / "a" / "broken.jpg").write_bytes(data[: len(data) // 2])
    write_png16(root / "val" / "b" / "wide.png", PNG16)
    return root


@pytest.mark.slow
def test_nested_class_folders_are_walked_like_torchvisions_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder

    from workbench.training.folders import index_imagefolder

    root = user_folder(tmp_path / "set")
    os.symlink(root / "train" / "b", root / "train" / "b" / "more" / "loop")  # a link loop ends
    ds = index_imagefolder(str(root))
    ours = [(os.fsdecode(f), int(y)) for f, y in zip(ds.train.files, ds.train.labels)]
    theirs = ImageFolder(str(root / "train"), allow_empty=True, is_valid_file=lambda p: "loop" not in p).samples
    assert ours == [(p, y) for p, y in theirs]
    assert sum(1 for f, _ in ours if "/more/" in f) == 3 and ds.classes == ["a", "b"]


def test_sixteen_bit_png_is_scaled_to_eight_bits_on_both_decoders(tmp_path):
    from workbench.training.data import decode_image
    from workbench.training.stream import read_image

    write_png16(tmp_path / "w.png", PNG16)
    grey = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)  # 0..63960: a 16-bit grey ramp
    Image.fromarray(grey).save(tmp_path / "g.png")
    want = np.array([255, 128, 0])
    assert (read_image(str(tmp_path / "w.png")).numpy()[:, 5, 5] == want).all()
    assert (decode_image(tmp_path / "w.png", 40)[5, 5] == want).all()
    ramp = np.rint(grey / 257.0)
    for got in (read_image(str(tmp_path / "g.png")).numpy()[0], decode_image(tmp_path / "g.png", 40)[..., 0]):
        assert np.abs(got.astype(int) - ramp).max() <= 1 and got.max() == 249  # scaled, never clipped at 255


def _schedule(data_path: str, **over):
    from workbench.training.schedules import get_schedule

    base = {"epochs": "1", "batch": "4", "resolution": "32", "multiscale": "", "eval_resize": "36",
            "warmup_iters": "1", "workers": "1", "eval_batch": "8", "data_path": data_path}
    return get_schedule("paper-ablation", {**base, **over})


@pytest.mark.parametrize("data_path", ["stream", "memory"])
def test_a_users_folder_trains_and_its_damaged_file_is_skipped_and_counted(tmp_path, monkeypatch, capsys, data_path):
    from workbench.arch.resolve import resolve_spec
    from workbench.training.train import train_model

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    root = user_folder(tmp_path / "set")
    r = train_model(resolve_spec("v3-xxs", TINY), f"imagefolder:{root}", _schedule(data_path), device="cpu",
                    progress=False, threads=1)
    assert r.status == "completed" and r.data_path == data_path
    skipped = r.skipped_images
    assert skipped["count"] == 1 and skipped["train"] == 1 and skipped["val"] == 0
    assert skipped["first"][0]["file"] == str(root / "train" / "a" / "broken.jpg")
    assert "truncated" in skipped["first"][0]["why"] and ".cpp" not in skipped["first"][0]["why"]
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("data: skipped")]
    assert len(line) == 1 and "1 damaged image file(s) (1 train)" in line[0] and "broken.jpg" in line[0]
    assert r.n_test == 8  # val: 3 + 3 JPEGs, the nested one and the 16-bit PNG
    if data_path == "memory":  # a second run reads the cache, and still knows what was skipped
        again = train_model(resolve_spec("v3-xxs", TINY), f"imagefolder:{root}", _schedule(data_path),
                            device="cpu", progress=False, threads=1)
        assert again.skipped_images == skipped


def test_the_sixteen_bit_image_reaches_the_model_as_its_eight_bit_pixels(tmp_path):
    import torch

    from workbench.training.batches import MEAN, STD
    from workbench.training.stream import FolderBatches, index_imagefolder

    root = tmp_path / "set"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            write_png16(root / split / c / "w.png", PNG16)
    ds = index_imagefolder(str(root))
    src = FolderBatches(ds, torch.device("cpu"), _schedule("stream", workers="0"), seed=0)
    x, _ = next(iter(src.test(4)))
    pixel = x[0, :, 16, 16].numpy() * np.array(STD) + np.array(MEAN)  # normalised on the CPU path: undone
    assert np.allclose(pixel * 255, [255, 128, 0], atol=0.6)


@pytest.mark.slow
def test_past_the_limit_damaged_files_stop_the_run_in_one_line(tmp_path, monkeypatch):
    root = user_folder(tmp_path / "set")
    data = (root / "train" / "a" / "1.jpg").read_bytes()
    (root / "train" / "a" / "1.jpg").write_bytes(b"garbage" * 50 + data[:10])  # a second damaged file of 16
    out = tmp_path / "run"
    r = _cli(["train", "--model", "v3-xxs", *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")],
              "--dataset", f"imagefolder:{root}", "--schedule", "paper-ablation", "--sched", "epochs=1",
              "--sched", "batch=4", "--sched", "resolution=32", "--sched", "multiscale=", "--sched", "workers=0",
              "--data-path", "stream", "--device", "cpu", "--out", str(out), "--quiet"], tmp_path)
    line = _one_error_line(r.stderr)
    assert r.returncode == 2 and "2 of the 16 train images cannot be decoded (at most 1 are skipped" in line, line
    assert not out.exists()


def test_streaming_workers_are_capped_at_the_trials_cpu_share(monkeypatch):
    import torch

    from workbench.training import stream

    monkeypatch.setattr(stream, "usable_cpus", lambda: 8)
    s = _schedule("stream", workers="6")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert stream.worker_count(s, cpu, cpus=1) == 0  # in-process: one core, no one to overlap with
    assert stream.worker_count(s, cuda, cpus=1) == 1  # the GPU computes while one worker decodes
    assert stream.worker_count(s, cpu, cpus=2) == 2 and stream.worker_count(s, cpu, cpus=4) == 4
    assert stream.worker_count(s, cpu, cpus=16) == 6 and stream.worker_count(s, cpu) == 6


# --- YAML that expands past a megabyte -----------------------------------------------------------------------
def _long_alias_bomb() -> str:
    """About 10 KB of YAML: one 10,000-character string aliased 59,049 times through five levels of lists
    (66,430 values, under the value limit; 590 million characters written out)."""
    levels = [f"&a [&s \"{'x' * 10_000}\"" + ", *s" * 8 + "]"]
    levels += [f"&{n} [" + ", ".join([f"*{p}"] * 9) + "]" for n, p in zip("bcde", "abcd")]
    return "[" + ", ".join(levels) + "]"


_RSS = textwrap.dedent("""
    import resource, subprocess, sys
    r = subprocess.run([sys.executable, "-m", "workbench.cli", *sys.argv[1:]], capture_output=True, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(r.returncode, peak, repr(r.stderr), sep="\\n")
""")


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["count", "ablate"])
def test_a_ten_kb_alias_file_of_long_strings_is_one_line_under_a_gigabyte(tmp_path, verb):
    bomb = _long_alias_bomb()
    if verb == "count":
        path = tmp_path / "spec.yaml"
        path.write_text(f"preset: v3-xxs\nname: {bomb}\n")
        argv = ["count", str(path)]
    else:
        path = tmp_path / "study.yaml"
        path.write_text(f"name: s\nbase: v3-xxs\nvariants: [{{name: a}}]\ndataset: digits\nschedule: smoke\n"
                        f"description: {bomb}\n")
        argv = ["ablate", "--study", str(path)]
    assert path.stat().st_size < 11_000
    r = subprocess.run([sys.executable, "-c", _RSS, *argv], cwd=tmp_path, env=_env(WORKBENCH_WORKSPACE=str(
        tmp_path / "ws")), capture_output=True, text=True, timeout=300)
    code, peak_kib, err = r.stdout.strip().split("\n", 2)
    err = eval(err)  # noqa: S307 - our own repr of the child's stderr
    line = _one_error_line(err)
    assert code == "2" and "expand to more than 1,048,576 characters" in line and len(line) < 400, line
    assert int(peak_kib) < (1 << 20), f"peak RSS {int(peak_kib) / 1024:.0f} MB"
    assert not (tmp_path / "ws").exists()


def test_descriptions_labels_and_names_are_short_strings_checked_first(tmp_path):
    from workbench.study.files import load_study

    base = "name: s\nbase: v3-xxs\ndataset: digits\nschedule: smoke\n"
    cases = {
        "description: [a, b]\nvariants: [{name: a}]\n": "description: expected a short text",
        f"description: {'d' * 3000}\nvariants: [{{name: a}}]\n": "description: 3,000 characters; at most 2,000",
        "variants: [{name: a, label: {x: 1}}]\n": "variants[0].label: expected a short text",
        "variants: [{name: a, label: \"two\\nlines\"}]\n": "give it on one line",
        "variants: [{name: ../a}]\n": "variants[0].name: '../a': use letters",
        f"variants: [{{name: a, label: {'l' * 300}}}]\n": "variants[0].label: 300 characters",
    }
    for extra, says in cases.items():
        (tmp_path / "s.yaml").write_text(base + extra)
        with pytest.raises(WorkbenchError, match=r".*") as e:
            load_study(str(tmp_path / "s.yaml"))
        assert says in str(e.value) and len(str(e.value)) < 400, (extra[:40], str(e.value))
    (tmp_path / "s.yaml").write_text(base.replace("name: s", "name: /abs") + "variants: [{name: a}]\n")
    with pytest.raises(WorkbenchError, match="name: '/abs': use letters"):
        load_study(str(tmp_path / "s.yaml"))


def test_every_error_line_is_short_and_one_line():
    from workbench.errors import one_line

    assert one_line("a\nb\rc") == "a\\nb\\rc"
    long = one_line("x" * 5000)
    assert len(long) < 1100 and long.endswith("(5,000 characters)")


# --- names that become paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "/abs/x", ".hidden", "a/b", "x" * 65, "new\nline"])
def test_search_study_names_that_are_not_plain_names_are_refused(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path / "ws"))
    code = main(["search", "--space", "mobilevit", "--study", name, "--trials", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("workbench: error: --study ")
    assert "a name may use" in err[0]
    assert not (tmp_path / "ws").exists()


def test_names_from_files_and_stores_never_leave_their_folder(tmp_path, capsys, monkeypatch):
    from workbench.fileio import check_file_name, check_name
    from workbench.study.files import load_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.yaml").write_text("preset: v3-xxs\nname: ../../escaped\n")
    assert main(["export", str(tmp_path / "evil.yaml")]) == 2  # the default --out is NAME.onnx
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be a file name" in err[0] and "give --out" in err[0]
    for bad in ("../x", "/x", "..", ".", "a/b", "a\\b"):
        with pytest.raises(WorkbenchError):
            check_file_name(bad, "name")
        with pytest.raises(WorkbenchError):
            check_name(bad, "study name")  # what results --out and report name their files by
    (tmp_path / "g.yaml").write_text("name: g\nbase: v3-xxs\ndataset: digits\nschedule: smoke\n"
                                     "grid: {name: [../../../tmp/x]}\n")
    with pytest.raises(WorkbenchError, match="cannot name a variant"):
        load_study(str(tmp_path / "g.yaml"))
    (tmp_path / "sp.yaml").write_text("name: ../sp\nbase: v3-xxs\nparameters: {width: [0.5, 0.75]}\n"
                                      "dataset: digits\nschedule: smoke\n")
    assert main(["search", "--space", str(tmp_path / "sp.yaml")]) == 2
    assert "name: '../sp': use letters" in capsys.readouterr().err


# --- the Ray process records ---------------------------------------------------------------------------------
def _planted(folder: Path, pid: int) -> None:
    from workbench.engine.claims import process_start

    (folder / "999999.json").write_text(json.dumps({"owner": f"{os.uname().nodename}|999999|1",
                                                    "processes": [[pid, process_start(pid)]]}))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("how", ["mode", "owner", "record-owner", "link"])
def test_a_planted_ray_record_is_refused_not_acted_on(tmp_path, monkeypatch, how):
    import pwd

    from workbench.engine import rayproc

    nobody = pwd.getpwnam("nobody").pw_uid
    folder = tmp_path / "records"
    folder.mkdir(mode=0o700)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        _planted(folder, victim.pid)
        monkeypatch.setenv("WORKBENCH_RAY_RECORDS", str(folder))
        if how == "mode":
            os.chmod(folder, 0o777)
        elif how == "owner":
            os.chown(folder, nobody, nobody)
        elif how == "record-owner":
            os.chown(folder / "999999.json", nobody, nobody)
        else:
            real = tmp_path / "real"
            folder.rename(real)
            folder.symlink_to(real)
        if how == "record-owner":  # the folder is ours: the record is skipped, nothing is signalled
            assert rayproc.end_stale_ray(print, grace_s=0.2) == 0
        else:
            with pytest.raises(rayproc.UnsafeRecords, match="refusing to act on records") as e:
                rayproc.end_stale_ray(print, grace_s=0.2)
            assert "\n" not in str(e.value)
        assert victim.poll() is None  # never signalled
    finally:
        victim.kill()
        victim.wait()


def test_records_go_to_a_private_folder(tmp_path, monkeypatch):
    import stat

    from workbench.engine import rayproc

    monkeypatch.delenv("WORKBENCH_RAY_RECORDS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert rayproc.record_dir() == tmp_path / "workbench" / "ray"
    made = rayproc.private_record_dir(create=True)
    assert made == tmp_path / "workbench" / "ray"
    for p in (made, made.parent):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert rayproc.record_dir() == tmp_path / "tmp" / f"workbench-{os.getuid()}" / "ray"
    victim = subprocess.Popen(["sleep", "60"])
    try:  # a record of our own, whose driver is dead, is acted on: the cleanup still works
        folder = rayproc.private_record_dir(create=True)
        _planted(folder, victim.pid)
        said: list[str] = []
        assert rayproc.end_stale_ray(said.append, grace_s=2) == 1 and victim.wait(5) is not None
        assert "ended 1 Ray process" in said[0]
    finally:
        victim.kill()
        victim.wait()


# --- the dashboard shows stored text as text -----------------------------------------------------------------
PAYLOAD = ("![x](http://127.0.0.1:{port}/planted.png) [click me](http://127.0.0.1:{port}/link) "
           "<img src=http://127.0.0.1:{port}/tag.png> :red[alarm] $x^2$ http://127.0.0.1:{port}/bare")


def _plant_error(db: Path, payload: str) -> None:
    """A failed trial's stored error replaced by `payload`, as a hostile or unlucky run could have left it."""
    import sqlite3

    con = sqlite3.connect(db)
    with con:
        n = con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'error'",
                        (json.dumps(payload),)).rowcount
    con.close()
    assert n >= 1


@pytest.mark.slow
def test_a_markdown_payload_in_a_trial_error_is_shown_as_text(tmp_path_factory, tmp_path, monkeypatch):
    import shutil

    from dashboard_store import seeded_db
    from streamlit.testing.v1 import AppTest

    from workbench.dashboard import STORAGE_ENV

    db = tmp_path / "studies.db"
    shutil.copy(seeded_db(tmp_path_factory.getbasetemp() / "dashboard-store"), db)
    payload = PAYLOAD.format(port=9)
    _plant_error(db, payload)
    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{db}")
    at = AppTest.from_file(str(ROOT / "dashboards" / "pareto.py"), default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    shown_md = [e.value for kind in ("markdown", "caption", "warning", "info", "error", "title")
                for e in getattr(at, kind)] + [e.value for e in at.sidebar.caption]
    failed = [v for v in (w.value for w in at.warning) if v.startswith("failed: q")]
    assert failed and r"\!\[x\]\(http\:" in failed[0] and r"\:red\[alarm\]" in failed[0] and r"\$x^2\$" in \
        failed[0].replace("\\^", "^")
    for value in shown_md:  # no element carries a live image, link, tag, directive or formula
        for live in ("![", "](http", "<img", ":red[", "$x", " http://"):
            assert live not in value.replace("\\" + live[0], ""), (live, value)


def test_md_escapes_every_metacharacter():
    from workbench.dashboard.app import md

    assert md("a_b*c") == r"a\_b\*c" and md("x\n# y") == r"x \# y"
    assert md("plain words 12") == "plain words 12"


# --- a finished store on a read-only medium ------------------------------------------------------------------
def _can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d])
    return ok


@pytest.fixture
def read_only_store(tmp_path_factory, tmp_path):
    """The seeded store copied into a folder, then seen through a read-only bind mount (EROFS)."""
    import shutil

    from dashboard_store import seeded_db

    if not _can_mount():
        pytest.skip("needs root and mount(2) for a read-only bind mount")
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    mnt.mkdir()
    shutil.copy(seeded_db(tmp_path_factory.getbasetemp() / "dashboard-store"), src / "studies.db")
    subprocess.run(["mount", "--bind", str(src), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
        yield src, mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.slow
def test_results_and_the_dashboard_read_a_store_on_a_read_only_medium(read_only_store, tmp_path):
    from workbench.dashboard.readonly import StoreProblem, read_chart_data

    src, mnt = read_only_store
    url = f"sqlite:///{mnt / 'studies.db'}"
    with pytest.raises(OSError):
        (mnt / "probe").write_text("x")  # the medium is read-only indeed
    r = _cli(["results", "--study", "alpha", "--storage", url, "--json"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {row["variant"] for row in json.loads(r.stdout)} == {"a", "b", "c"}
    data = read_chart_data(url)
    assert len(data.trials) == 8 and set(data.trials["study"]) == {"alpha", "beta"}
    assert sorted(p.name for p in mnt.iterdir()) == ["studies.db"]  # nothing written beside it (no -shm, no -wal)
    # A write-ahead log that was never folded in cannot be read there without its -shm: said, in one line
    subprocess.run(["umount", "-l", str(mnt)], check=True)
    (src / "studies.db-wal").write_bytes(b"\0" * 4096)
    subprocess.run(["mount", "--bind", str(src), str(mnt)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], check=True)
    with pytest.raises(StoreProblem, match="is on a read-only file system, and its write-ahead log"):
        read_chart_data(url)
    r = _cli(["results", "--study", "alpha", "--storage", url], tmp_path)
    line = _one_error_line(r.stderr)
    assert r.returncode == 2 and "read-only file system" in line


@pytest.mark.slow
def test_results_read_a_store_on_a_full_disk(tmp_path_factory, tmp_path):
    import shutil

    from dashboard_store import seeded_db

    if not _can_mount():
        pytest.skip("needs root and mount(2) for a small tmpfs")
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    try:
        shutil.copy(seeded_db(tmp_path_factory.getbasetemp() / "dashboard-store"), full / "studies.db")
        with open(full / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        r = _cli(["results", "--study", "beta", "--storage", f"sqlite:///{full / 'studies.db'}"], tmp_path)
        assert r.returncode in (0, 1) and "no space" not in r.stderr, r.stderr[-2000:]  # 1: beta has a failed trial
    finally:
        subprocess.run(["umount", "-l", str(full)])


# --- failed trials' checkpoints, out of memory, one-line errors ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["exception", "diverged", "oom"])
def test_failed_trials_checkpoints_are_removed_unless_kept(tmp_path, outcome):
    from test_study_trial import _item, _result

    from workbench.engine.trial import execute

    def train(spec, dataset, schedule, out_dir=None, **kw):
        run = Path(out_dir)
        (run / "checkpoint.pt").write_bytes(b"x" * 1000)
        (run / "metrics.jsonl").write_text("{}\n")
        if outcome == "exception":
            raise ValueError("bad things")
        if outcome == "oom":
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 1073741824 bytes")
        return _result("diverged", None)

    rec = execute(_item(tmp_path), lambda m: None, train_fn=train)
    assert rec["status"] == "failed" and rec["checkpoints_removed"] == 1000
    assert rec["failure"] == {"exception": "exception", "diverged": "nan", "oom": "oom"}[outcome]
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "metrics.jsonl").exists()
    rec = execute(_item(tmp_path, keep_checkpoints=True), lambda m: None, train_fn=train)
    assert (tmp_path / "run" / "checkpoint.pt").exists() and "checkpoints_removed" not in rec


@pytest.mark.parametrize("exc", [
    MemoryError(),
    RuntimeError("DataLoader worker (pid 123) is killed by signal: Killed. "),
    OSError(12, "Cannot allocate memory"),
])
def test_a_trial_out_of_memory_is_recorded_as_oom(exc):
    from workbench.engine.trial import _classify

    assert _classify(exc) == "oom"
    try:
        raise RuntimeError("loading failed") from exc
    except RuntimeError as wrapped:
        assert _classify(wrapped) == "oom"
    assert _classify(ValueError("memory of a goldfish")) == "exception"


def test_a_ray_worker_lost_for_memory_is_told_from_other_deaths():
    from workbench.engine.trial import lost_worker_failure

    assert lost_worker_failure("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on "
                               "memory.") == "oom"
    assert lost_worker_failure("The actor died unexpectedly before finishing this task.") == "worker"
    assert lost_worker_failure(None) == "worker"


@pytest.mark.slow
def test_a_file_name_with_a_line_break_stays_on_one_line(tmp_path, capsys):
    from test_study_trial import _item

    from workbench.engine.trial import execute

    odd = tmp_path / "evil\nname.yaml"
    odd.write_text("preset: v3-xxs\nname: [1, 2\n")
    assert main(["count", str(odd)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evil\\nname.yaml" in err

    def train(*a, **k):
        raise WorkbenchError(f"unreadable image {tmp_path}/a\nb.jpg: broken")

    rec = execute(_item(tmp_path), lambda m: None, train_fn=train)
    assert "\n" not in rec["error"] and "a\\nb.jpg" in rec["error"]


# --- passwords from the environment: PGPASSWORD, PGPASSFILE, --storage-env (a real server) --------------------
@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_passwords_come_from_the_environment_not_the_command_line(tmp_path):
    import shutil
    import tempfile

    pytest.importorskip("psycopg")
    from pg_server import PASSWORD, USER, pg_bin, start_server

    if pg_bin() is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    server = start_server(root)
    try:
        from workbench.engine.store import Store

        Store(server.url).engine.dispose()  # the store's tables, as a first `ablate` makes them
        bare = f"postgresql+psycopg://{USER}@127.0.0.1:{server.port}/studies"  # no password in the URL
        argv = ["results", "--study", "nothing-here"]
        # reached and logged in: the answer is about the study, not the connection
        reached = "study 'nothing-here' is not in"
        without = _cli([*argv, "--storage", bare], tmp_path, PGPASSWORD="", PGPASSFILE=str(tmp_path / "none"))
        assert without.returncode == 2 and reached not in without.stderr
        r = _cli([*argv, "--storage", bare], tmp_path, PGPASSWORD=PASSWORD)
        assert r.returncode == 2 and reached in _one_error_line(r.stderr), r.stderr
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{server.port}:studies:{USER}:{PASSWORD}\n")
        passfile.chmod(0o600)
        r = _cli([*argv, "--storage", bare], tmp_path, PGPASSFILE=str(passfile))
        assert r.returncode == 2 and reached in _one_error_line(r.stderr), r.stderr
        r = _cli([*argv, "--storage-env", "WB_URL"], tmp_path, WB_URL=server.url)
        assert reached in _one_error_line(r.stderr) and PASSWORD not in r.stderr
        r = _cli([*argv, "--storage", server.url], tmp_path)  # on the command line: warned, never printed
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith("workbench: warning:") and reached in lines[1] and PASSWORD not in r.stderr
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
