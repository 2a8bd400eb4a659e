"""`resources: auto`: the GPU where there is one (a fraction of it sized from the memory estimate), the CPU
otherwise, one line saying which; CUDA's presence is faked, so this runs on any machine."""

from __future__ import annotations

import pytest
import torch

from workbench.cli import main
from workbench.engine import resources
from workbench.engine.engine import Engine, EngineOptions
from workbench.engine.plan import RunPlan
from workbench.errors import WorkbenchError
from workbench.study.ablate import StudySource
from workbench.study.files import load_study, parse_study

GB = 10**9


def test_auto_sizes_the_gpu_share_from_the_estimate_or_falls_back_to_the_cpu():
    assert resources.auto_gpus(None, None)[0] == 0.0 and "train on the CPU" in resources.auto_gpus(None, None)[1]
    gpu = ("Fake H100", 80 * GB)
    assert resources.auto_gpus(2 * GB, gpu)[0] == 0.125
    assert resources.auto_gpus(30 * GB, gpu)[0] == 0.5
    share, line = resources.auto_gpus(70 * GB, gpu)
    assert share == 1.0 and "1 GPU per trial on Fake H100" in line and "--gpus-per-trial" in line
    assert resources.cluster_gpus(4)[0] == 1.0 and resources.cluster_gpus(0)[0] == 0.0


def test_study_files_take_auto_and_refuse_other_words(tmp_path):
    base = "name: s\nbase: v3-xxs\nvariants: [{name: a}]\ndataset: digits\nschedule: smoke\n"
    assert parse_study({**_yaml(base), "resources": "auto"}, tmp_path / "s.yaml").gpus == resources.AUTO
    assert parse_study({**_yaml(base), "resources": {"gpus": "auto"}}, tmp_path / "s.yaml").gpus == resources.AUTO
    with pytest.raises(WorkbenchError, match="resources.gpus"):
        parse_study({**_yaml(base), "resources": {"gpus": "many"}}, tmp_path / "s.yaml")
    assert load_study("table6").gpus == resources.AUTO  # the shipped studies use the GPU where there is one


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize("cuda", [True, False], ids=["cuda", "cpu"])
def test_the_engine_resolves_auto_before_anything_runs(monkeypatch, capsys, cuda):
    monkeypatch.setattr(resources, "local_gpu", lambda: ("Fake GPU", 16 * GB) if cuda else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    study = load_study("table6")
    engine = Engine(EngineOptions(progress=True))
    source = StudySource(study, RunPlan(study.dataset, study.schedule, dict(study.schedule_overrides)))
    source.prepare(engine)
    engine.preflight(source)
    assert capsys.readouterr().err == ""  # said when the run starts, so bad input found later stays one line
    if cuda:  # v1-S at the smoke schedule needs far less than 1/8 of 16 GB
        assert source.plan.gpus == 0.125 and source.plan.device == "cuda"
        assert "resources: auto: 0.125 GPU per trial on Fake GPU" in engine.resources_line
    else:
        assert source.plan.gpus == 0.0 and source.plan.device == "cpu"
        assert "no CUDA GPU on this machine" in engine.resources_line


def test_gpus_per_trial_takes_auto_or_a_count(capsys):
    assert main(["ablate", "--study", "table6", "--gpus-per-trial", "lots"]) == 2
    assert "--gpus-per-trial: expected a number of GPUs >= 0 or auto" in capsys.readouterr().err


def test_auto_stays_resolved_when_the_source_prepares_again(monkeypatch, capsys):
    monkeypatch.setattr(resources, "local_gpu", lambda: ("Fake GPU", 16 * GB))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    study = load_study("table6")
    engine = Engine(EngineOptions(progress=False))
    source = StudySource(study, RunPlan(study.dataset, study.schedule, dict(study.schedule_overrides)))
    source.prepare(engine)
    engine.preflight(source)
    source.prepare(engine)  # what open() does
    assert source.plan.gpus == 0.125 and engine.work_item(source, "k", 0, {}, 0).device == "cuda"


@pytest.mark.parametrize("cores", [1, 2, 4])
def test_each_trial_plans_its_memory_for_its_share_of_the_node(monkeypatch, cores):
    from workbench import machine
    from workbench.counting.memory import device_memory

    monkeypatch.setattr(machine, "usable_cores", lambda: cores)
    monkeypatch.setattr(resources, "local_gpu", lambda: None)
    study = load_study("table6")
    engine = Engine(EngineOptions(progress=False, cpus_per_trial=1))
    source = StudySource(study, RunPlan(study.dataset, study.schedule, dict(study.schedule_overrides)))
    source.prepare(engine)
    engine.preflight(source)
    source.prepare(engine)  # what open() does: the share stays
    assert source.plan.memory_share == pytest.approx(1 / cores)
    item = engine.work_item(source, "k", 0, {}, 0)
    assert item.memory_share == pytest.approx(1 / cores)
    whole, _ = device_memory("cpu")
    share, what = device_memory("cpu", item.memory_share)
    assert share == int(whole / cores) and (cores == 1 or "share" in what)
