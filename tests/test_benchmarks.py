"""The benchmark scripts: their arithmetic on hand-made numbers, their pipelines' behaviour on the tests'
small data, and one end-to-end run of each."""

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_summary_reports_medians_every_round_both_ratios_and_the_ema_cost():
    rounds = [
        {"seed": {"images_per_s": 100.0}, "mnist20k-seed-recipe": {"images_per_s": 250.0},
         "mnist20k-default": {"images_per_s": 300.0, "eval_seconds": 1.0}},
        {"seed": {"images_per_s": 200.0}, "mnist20k-seed-recipe": {"images_per_s": 500.0},
         "mnist20k-default": {"images_per_s": 700.0, "eval_seconds": 3.0}},
        {"seed": {"images_per_s": 300.0}, "mnist20k-seed-recipe": {"images_per_s": 600.0},
         "mnist20k-default": {"images_per_s": 900.0, "eval_seconds": 2.0}},
    ]  # fmt: skip
    for r, ema in zip(rounds, (280.0, 665.0, 810.0), strict=True):
        r["mnist20k-default-ema"] = {"images_per_s": ema, "eval_seconds": 1.0}
    s = load("throughput").summarize(rounds)
    assert s["seed_images_per_s"] == 200.0 and s["mnist20k-seed-recipe_rounds"] == [250.0, 500.0, 600.0]
    assert s["ratio_same_recipe"] == 2.5 and s["ratio_same_recipe_rounds"] == [2.5, 2.5, 2.0]
    assert s["ratio_default"] == 3.5 and s["ratio_default_rounds"] == [3.0, 3.5, 3.0]
    assert s["eval_seconds"] == 2.0
    assert s["ema_step_cost"] == 0.05  # 665 against 700


def layers(model: nn.Module) -> list[str]:
    return [f"{type(m).__name__}{getattr(m, 'p', '')}" for m in model.modules() if not list(m.children())]


@pytest.mark.parametrize(
    "pipeline, rotate, translate", [("mnist20k-seed-recipe", 7.0, 0.0), ("mnist20k-default", 7.0, 2.0)]
)
def test_mnist20k_pipeline_augments_and_steps_as_train_does(pipeline, rotate, translate, data_dir, monkeypatch):
    import mnist20k.step

    throughput = load("throughput")
    calls = []
    real_augment = mnist20k.step.augment
    monkeypatch.setattr(mnist20k.step, "augment", lambda x, r, t, g: calls.append((r, t)) or real_augment(x, r, t, g))
    recipe = throughput.PIPELINES[pipeline]
    step, model, _, _ = throughput.mnist20k_step(data_dir, torch.device("cpu"), recipe, False, False, False)
    before = [p.detach().clone() for p in model.parameters()]
    step()
    step()
    assert calls == [(rotate, translate)] * 2
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_both_pipelines_of_the_same_recipe_ratio_train_the_same_network(data_dir):
    throughput = load("throughput")
    seed_step, seed_model, loader = throughput.seed_step(data_dir, torch.device("cpu"), workers=0)
    recipe = throughput.PIPELINES["mnist20k-seed-recipe"]
    _, ours, _, _ = throughput.mnist20k_step(data_dir, torch.device("cpu"), recipe, False, False, False)
    assert layers(seed_model) == layers(ours) and "Dropout2d0.15" in layers(ours)
    rotation = loader.dataset.transform.transforms[0]
    assert type(rotation).__name__ == "RandomRotation" and rotation.degrees == [-7.0, 7.0]
    before = [p.detach().clone() for p in seed_model.parameters()]
    seed_step()
    assert all(not torch.equal(a, b) for a, b in zip(before, seed_model.parameters(), strict=True))


@pytest.mark.parametrize(
    "name", ["seed-default-cpu.json", "sweep-tiny-e15-tuned-cpu.json", "sweep-base-e5-tuned-cpu.json"]
)
def test_report_renders_a_sweep_file_of_either_format(name):
    """The older record of runs, and sweep.json as mnist20k sweep writes it now; a sweep judged on its final epoch
    alone (--last 1) has no column of the lowest of its last epochs."""
    path = ROOT / "benchmarks" / "results" / name
    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), str(path)], check=True,
                           capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    record = json.loads(path.read_text())
    runs = record["runs"] if "runs" in record else record["configurations"][0]["runs"]
    for run in runs:
        assert f"| {run['seed']} | {run['epochs'][-1]['test_accuracy']:.2f}% |" in table
    if name == "sweep-base-e5-tuned-cpu.json":
        assert "| mean ± std | **99.46% ± 0.03**, min 99.42% | | |" in table and "lowest of the last" not in table
        assert "EMA 0.99" in table.splitlines()[0]
        return
    mean = {"seed-default-cpu.json": "99.56% ± 0.06", "sweep-tiny-e15-tuned-cpu.json": "99.49% ± 0.05"}[name]
    assert f"| mean ± std | **{mean}** |" in table and "lowest of the last 3 epochs" in table


def test_report_of_a_missing_file_is_one_line():
    missing = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "no.json"], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1


def test_a_tables_heading_names_the_rarer_settings_only_when_a_run_changed_them():
    report = load("report")
    tuned = json.loads((ROOT / "benchmarks" / "results" / "sweep-tiny-e15-tuned-cpu.json").read_text())
    config = tuned["configurations"][0]["config"]
    assert report._rarer(config) == ", batch 64, weight decay 1.147247281078155e-05"
    assert report._rarer({**config, "batch_size": 128, "weight_decay": 5e-4}) == ""
    assert report._rarer({**config, "batch_size": 128, "weight_decay": 5e-4, "ema": 0.99}) == ", EMA 0.99"


def test_throughput_end_to_end_reports_every_round(data_dir):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--data-dir", str(data_dir),
           "--steps", "2", "--warmup", "1", "--rounds", "2", "--workers", "0", "--json"]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rounds"] == 2
    for key in ("seed_rounds", "mnist20k-seed-recipe_rounds", "mnist20k-default_rounds", "ratio_same_recipe_rounds"):
        assert len(result[key]) == 2, key
    assert {"ratio_same_recipe", "ratio_default", "eval_seconds"} <= set(result)


def test_whole_run_times_both_processes_and_reports_their_ratio(data_dir):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "whole_run.py"), "--device", "cpu", "--data-dir", str(data_dir),
           "--seed-epochs", "1", "--workers", "0", "--json", "--", "--epochs", "2", "--max-batches", "2"]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout)
    seed, ours = result["seed_pipeline"], result["mnist20k"]
    assert seed["epochs"] == 1 and 0 <= seed["test_correct"] <= 10_000 and seed["seconds"] > 0
    assert (ours["recipe"], ours["epochs"], ours["config"]["max_batches"]) == ("fast", 2, 2)
    assert result["ratio"] == round(seed["seconds"] / ours["seconds"], 2)


def test_report_renders_the_committed_study():
    path = ROOT / "benchmarks" / "results" / "tune-tiny-e8-cpu.json"
    table = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    study = json.loads(path.read_text())
    best = study["best"][0]
    assert f"| {best['number']} | {best['value']:.2f}% |" in table
    assert f"{study['finished']} trials" in table and "Importances: " in table


def test_the_frontier_script_runs_a_study_confirms_its_best_on_ten_seeds_and_packs_the_records(data_dir, tmp_path):
    """benchmarks/gpu_frontier.sh is for a lent GPU; here it runs on the CPU, one short trial, as its header says."""
    out = tmp_path / "f"
    short = {"DEVICE": "cpu", "TRIALS": "1", "JOBS": "1", "EXTRA": "--epochs 1 --max-batches 2 --val 128"}
    env = {**os.environ, **short, "MNIST20K_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    script = [str(ROOT / "benchmarks" / "gpu_frontier.sh"), str(out), "nano", "confirm"]
    done = subprocess.run(["bash", *script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    study = json.loads((out / "nano" / "tune.json").read_text())
    assert study["finished"] == 1 and study["budget"] == 2000 and study["aggregate"] == "min"
    assert study["config"]["epochs"] == 1 and study["seeds"] == [1, 2]  # EXTRA's --epochs after the script's 20
    sweep = json.loads((out / "nano" / "confirm" / "sweep.json").read_text())
    runs = sweep["configurations"][0]["runs"]
    assert [(r["seed"], r["status"]) for r in runs] == [(seed, "done") for seed in range(1, 11)]  # a preset's ten
    with tarfile.open(out / "frontier.tar.gz") as packed:
        names = packed.getnames()
    assert {"./nano/study.log", "./nano/tune.json", "./nano/confirm/sweep.json"} <= set(names)
    assert not [n for n in names if n.endswith(".pt")]  # records, no checkpoints
