"""Every option of every command changes what happens: each setting reaches the thing it sets (the optimizer, the
schedule, the loss, the augmentation, the network, the split), an option that would change nothing is refused in
one line, and a ledger names, for each option of each command, the test that shows its effect."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import typer
from conftest import one_error_line
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.data import normalize
from mnist20k.nets import build_model
from mnist20k.train import prepare

TESTS = Path(__file__).parent
runner = CliRunner()

# A value other than the default for every setting a CPU run can show the effect of
SETTINGS = dict(
    model="tiny",
    args={"widths": [8, 16, 10, 16, 16, 12]},
    epochs=3,
    batch_size=64,
    lr=0.07,
    warmup=0.3,
    momentum=0.8,
    nesterov=False,
    weight_decay=1e-4,
    dropout=0.05,
    rotate=5.0,
    translate=1.0,
    label_smoothing=0.1,
    seed=7,
    val=100,
    max_batches=5,
)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_each_training_setting_reaches_what_it_sets(data_dir, monkeypatch):
    import mnist20k.step as step

    config = make_config(**SETTINGS)
    run = prepare(config, data_dir, None, "cpu", None, False)
    group = run.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.8, False, 1e-4)
    schedule = run.scheduler
    assert isinstance(schedule, torch.optim.lr_scheduler.OneCycleLR) and schedule.total_steps == 3 * 5
    assert schedule.optimizer.param_groups[0]["max_lr"] == 0.07
    assert schedule._schedule_phases[0]["end_step"] == pytest.approx(0.3 * 15 - 1)  # the warm-up's last step
    # the split: the last 100 of the 512 training images are held out and scored
    assert run.split == "val" and len(run.scored[0]) == 100 and run.train_images == 412
    # the network: tiny with these widths and this dropout, its weights drawn from --seed
    torch.manual_seed(7)
    expected = build_model("tiny", widths=[8, 16, 10, 16, 16, 12], dropout=0.05)
    for (name, a), b in zip(expected.state_dict().items(), run.network.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [m.p for m in run.network.module.modules() if isinstance(m, torch.nn.Dropout2d)] == [0.05] * 5
    assert torch.equal(run.gen.get_state(), torch.Generator().manual_seed(7).get_state())

    # one step: --rotate and --translate reach the augmentation, --label-smoothing the loss
    drawn = []

    def augment(images, rotate, translate, gen):
        out = real_augment(images, rotate, translate, gen)
        drawn.append((rotate, translate, out))
        return out

    real_augment = step.augment
    monkeypatch.setattr(step, "augment", augment)
    before = copy.deepcopy(run.network.module)
    torch.manual_seed(0)  # dropout's masks: drawn again below for the same forward pass
    loss = run.batch_step(torch.arange(64)).item()
    ((rotate, translate, x),) = drawn
    assert (rotate, translate) == (5.0, 1.0)
    torch.manual_seed(0)
    with torch.no_grad():
        log_p = before(normalize(x).contiguous(memory_format=torch.channels_last))
    labels = run.batch_step.labels[:64]
    smoothed = 0.9 * F.nll_loss(log_p, labels) + 0.1 * (-log_p.mean(1)).mean()
    assert loss == pytest.approx(smoothed.item(), rel=1e-5)
    assert loss != pytest.approx(F.nll_loss(log_p, labels).item(), rel=1e-3)


def test_a_constant_schedule_keeps_the_lr(data_dir):
    run = prepare(
        make_config(schedule="constant", lr=0.03, epochs=1, max_batches=3), data_dir, None, "cpu", None, False
    )
    assert run.scheduler.get_last_lr() == [0.03] and run.scheduler.lr_lambdas[0](2) == 1.0  # the peak, from the start


def test_amp_off_cuda_is_told_to_change_nothing(data_dir, tmp_path):
    result = invoke("train", "--amp", "--epochs", 1, "--max-batches", 1, "--device", "cpu", "--data-dir", data_dir,
                    "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: --amp is bfloat16 autocast on CUDA: this cpu run trains in float32" in result.stderr


def test_sweep_and_tune_give_their_settings_to_every_run(data_dir, tmp_path):
    """What a sweep's run trains is its config.json (test_config_file); what goes into it is this."""
    from mnist20k import sweep
    from mnist20k.train import train
    from mnist20k.tune.prepare import prepare

    teacher = tmp_path / "teacher"  # a finished run that held out the same 100 images
    train(
        make_config(model="micro", epochs=1, max_batches=1, val=100), data_dir=data_dir, out_dir=teacher, device="cpu"
    )
    given = {k: v for k, v in SETTINGS.items() if k != "seed"}
    given |= {"ema": 0.9, "teacher": str(teacher), "distill_weight": 0.7, "temperature": 3.0}
    where = {"device": "cpu", "data_dir": data_dir, "overwrite": False}
    swept = sweep.prepare("default", given, [], seeds=["3-4"], out=tmp_path / "sweep", jobs=None, target=99.4, last=3,
                          **where)  # fmt: skip
    assert [r.config for r in swept.runs] == [make_config(**given, seed=s) for s in (3, 4)]
    study = prepare("default", given, ["rotate=1:2"], trials=2, jobs=1, out=tmp_path / "study", storage=None,
                    study=None, seeds=["3-4"], aggregate="min", pruner="none", budget=20_000, **where)  # fmt: skip
    assert study.config == make_config(**given) and study.spec.seeds == [3, 4] and study.spec.aggregate == "min"


REFUSED = {
    "sweep --seed": (["sweep", "--seed", "7"], 2, "sweep trains the seeds of --seeds; write --seeds 7"),
    "tune --seed": (["tune", "--search", "lr=0.1,0.2", "--seed", "7"], 2, "tune trains each trial on the seeds of"),
    "eval --errors-limit alone": (["eval", "RUN", "--errors-limit", "5"], 2, "give --errors FILE.png too"),
    "export --data-dir without --verify": (["export", "RUN", "--no-verify", "--data-dir", "DATA"], 2, "drop it"),
    "train --resume --overwrite": (["train", "--resume", "RUN", "--overwrite"], 2, "--overwrite would not replace"),
    "tune --aggregate min of one seed": (["tune", "--search", "lr=0.1,0.2", "--aggregate", "min"], 2, "two or more"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_an_option_that_would_change_nothing_is_refused(case, data_dir, tmp_path):
    from mnist20k.config import make_config as config
    from mnist20k.train import train

    words, code, text = REFUSED[case]
    run = tmp_path / "run"
    train(config(epochs=1, max_batches=1), data_dir=data_dir, out_dir=run, device="cpu")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    words = [str(run) if w == "RUN" else str(data_dir) if w == "DATA" else w for w in words]
    if words[0] in ("sweep", "tune"):
        words += ["--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "--device", "cpu"]
    one_error_line(invoke(*words), code, text)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ---- the ledger: for each option of each command, the test that shows what it changes -----------------------

TRAINING = "test_options.py::test_each_training_setting_reaches_what_it_sets"
SETTINGS_OF_RUNS = "test_options.py::test_sweep_and_tune_give_their_settings_to_every_run"
SETTING_TESTS = {
    "model": TRAINING,
    "epochs": TRAINING,
    "batch_size": TRAINING,
    "lr": TRAINING,
    "schedule": "test_options.py::test_a_constant_schedule_keeps_the_lr",
    "warmup": TRAINING,
    "momentum": TRAINING,
    "nesterov": TRAINING,
    "weight_decay": TRAINING,
    "dropout": TRAINING,
    "rotate": TRAINING,
    "translate": TRAINING,
    "label_smoothing": TRAINING,
    "seed": TRAINING,
    "val": TRAINING,
    "max_batches": TRAINING,
    "amp": "test_options.py::test_amp_off_cuda_is_told_to_change_nothing",
    "compile": "test_cli.py::test_compile_path_compiles_trains_and_saves_plain_weights",
    "cuda_graph": "test_step.py::test_cuda_graph_setting_reaches_the_step_that_prepare_makes",
    "ema": "test_ema.py::test_the_saved_weights_are_an_average_of_every_steps_weights",
    "teacher": "test_distill.py::test_a_student_names_its_teacher_and_its_tables_say_so",
    "distill_weight": "test_distill.py::test_the_loss_is_the_weighted_sum_of_both_terms",
    "temperature": "test_distill.py::test_the_loss_is_the_weighted_sum_of_both_terms",
}
NETWORK_ARGS = {"arg": "test_network_args.py::test_the_command_line_arg_reaches_the_network_and_config_json"}
DEVICE = {"device": "test_cli.py::test_cuda_without_a_gpu"}
DATA = {"data_dir": "test_cli.py::test_missing_data_names_the_files_and_leaves_nothing_behind"}
READS = {  # the commands that read a checkpoint
    **NETWORK_ARGS,
    **DEVICE,
    "model": "test_own_network.py::test_train_eval_predict_resume_of_your_network",
    "checkpoint": "test_cli.py::test_train_then_eval_agree",
}
LEDGER = {
    "summary": {
        "model": "test_cli.py::test_summary_of_the_smaller_presets_within_their_budgets",
        "arg": "test_network_args.py::test_the_command_line_arg_reaches_the_network_and_config_json",
        "budget": "test_cli.py::test_summary_of_the_smaller_presets_within_their_budgets",
    },
    "train": {
        **NETWORK_ARGS,
        **DEVICE,
        **DATA,
        **SETTING_TESTS,
        "recipe": "test_cli.py::test_seed_recipe_is_reachable",
        "config_file": "test_config_file.py::test_a_runs_config_json_trains_the_same_run_again",
        "out": "test_cli.py::test_train_then_eval_agree",
        "resume": "test_reliability.py::test_cli_resume_continues_in_the_run_folder",
        "overwrite": "test_reliability.py::test_existing_run_is_kept_unless_overwrite",
        "log": "test_logs.py::test_train_logs_each_epoch_to_tensorboard_at_its_step",
        "model": TRAINING,
    },
    "sweep": {
        **NETWORK_ARGS,
        **DEVICE,
        **DATA,
        **{name: SETTINGS_OF_RUNS for name in SETTING_TESTS},
        "seed": "test_options.py::test_an_option_that_would_change_nothing_is_refused",
        "seeds": "test_sweep.py::test_the_reference_sweep_writes_run_folders_and_its_record",
        "grid": "test_sweep.py::test_a_set_grid_runs_end_to_end_from_the_command_line",
        "jobs": "test_sweep.py::test_two_jobs_give_exactly_the_numbers_of_one",
        "target": "test_sweep.py::test_the_target_decides_the_verdict",
        "last": "test_full_disk.py::test_a_sweep_whose_run_hits_the_limit_tells_it_and_resumes_after_it",
        "recipe": "test_sweep.py::test_a_grid_is_every_combination_for_every_seed",
        "out": "test_sweep.py::test_the_reference_sweep_writes_run_folders_and_its_record",
        "overwrite": "test_sweep.py::test_overwrite_replaces_a_different_sweep",
        "log": "test_logs.py::test_a_sweep_logs_each_seed_in_its_own_folder_and_tensorboard_names_them_so",
        "json_output": "test_sweep.py::test_rerun_skips_finished_runs_and_a_different_sweep_is_refused",
    },
    "tune": {
        **NETWORK_ARGS,
        **DEVICE,
        **DATA,
        **{name: SETTINGS_OF_RUNS for name in SETTING_TESTS},
        "seed": "test_options.py::test_an_option_that_would_change_nothing_is_refused",
        "search": "test_tune.py::test_each_trial_folder_is_an_ordinary_run_that_eval_scores",
        "trials": "test_tune.py::test_two_workers_share_a_journal_study_and_end_with_exactly_its_trials",
        "jobs": "test_tune.py::test_two_workers_share_a_journal_study_and_end_with_exactly_its_trials",
        "seeds": "test_tune.py::test_aggregate_min_judges_a_trial_by_its_lowest_seed",
        "aggregate": "test_tune.py::test_aggregate_min_judges_a_trial_by_its_lowest_seed",
        "pruner": "test_tune.py::test_hyperband_prunes_and_none_trains_every_trial_to_the_end",
        "objectives": "test_shapes.py::test_a_two_objective_study_reports_the_pareto_front_of_its_own_trials",
        "budget": "test_tune.py::test_network_arguments_are_searched_and_a_network_over_budget_is_not_trained",
        "sampler_seed": "test_tune.py::test_the_sampler_seed_picks_the_same_values_again",
        "storage": "test_tune_workers.py::test_four_machines_at_once_on_a_fresh_database_share_it_unseen",
        "study": "test_tune_workers.py::test_four_machines_at_once_on_a_fresh_database_share_it_unseen",
        "max_retries": "test_tune_workers.py::test_a_trial_past_its_tries_counts_as_lost_and_is_not_tried_again",
        "recipe": SETTINGS_OF_RUNS,
        "out": "test_tune.py::test_each_trial_folder_is_an_ordinary_run_that_eval_scores",
        "overwrite": "test_tune.py::test_another_search_in_a_study_folder_is_refused_and_leaves_it_whole",
        "log": "test_logs.py::test_a_study_logs_each_trial_on_its_validation_images",
        "json_output": "test_tune.py::test_each_trial_folder_is_an_ordinary_run_that_eval_scores",
        "val": "test_tune.py::test_without_the_test_files_tune_and_train_val_run_end_to_end",
        "epochs": "test_tune.py::test_a_hopeless_learning_rate_is_pruned_early",
    },
    "eval": {
        **READS,
        **DATA,
        "batch_size": "test_options.py::test_eval_batch_size_changes_the_batches_not_the_score",
        "json_output": "test_cli.py::test_train_then_eval_agree",
        "errors": "test_see.py::test_errors_grid_matches_the_listed_mistakes",
        "errors_limit": "test_see.py::test_errors_grid_matches_the_listed_mistakes",
    },
    "predict": {
        **READS,
        "images": "test_see.py::test_predict_refuses_each_bad_file_in_one_line_and_reads_the_rest",
        "json_output": "test_see.py::test_predict_refuses_each_bad_file_in_one_line_and_reads_the_rest",
    },
    "draw": {
        **READS,
        "port": "test_draw.py::test_a_port_in_use_is_one_line",
        "host": "test_draw.py::test_ctrl_c_ends_it_with_exit_0_and_another_host_is_warned_of",
        "browser": "test_draw.py::test_ctrl_c_ends_it_with_exit_0_and_another_host_is_warned_of",
    },
    "export": {
        **{k: v for k, v in READS.items() if k != "device"},  # export runs on the CPU
        "format": "test_export.py::test_export_writes_a_checked_file_beside_the_checkpoint",
        "out": "test_export.py::test_onnx_export_has_no_batchnorm_node_a_dynamic_batch_and_its_metadata",
        "overwrite": "test_export.py::test_an_existing_file_is_refused_without_overwrite",
        "verify": "test_export.py::test_a_wrong_export_is_caught_and_nothing_is_written",
        "data_dir": "test_export.py::test_export_writes_a_checked_file_beside_the_checkpoint",
    },
}


def test_eval_batch_size_changes_the_batches_not_the_score(data_dir, tmp_path, monkeypatch):
    import mnist20k.evaluate as evaluate
    from mnist20k.train import train

    run = tmp_path / "run"
    train(make_config(epochs=1, max_batches=1), data_dir=data_dir, out_dir=run, device="cpu")
    sizes = []
    real = evaluate.normalize
    monkeypatch.setattr(evaluate, "normalize", lambda images: sizes.append(len(images)) or real(images))
    scores = [
        invoke("eval", run, "--data-dir", data_dir, "--device", "cpu", "--json", *b).stdout
        for b in ([], ["--batch-size", "64"])
    ]
    assert sizes == [128, 72] + [64, 64, 64, 8]  # 200 test images: the CPU's default of 128, then 64
    assert scores[0] == scores[1]


def functions_in(name: str) -> set[str]:
    tree = ast.parse((TESTS / name).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_the_ledger_names_a_test_for_every_option_of_every_command():
    commands = typer.main.get_command(app).commands
    assert set(LEDGER) == set(commands)
    for name, command in commands.items():
        options = {p.name for p in command.params}
        assert set(LEDGER[name]) == options, (name, options ^ set(LEDGER[name]))
        for option, where in LEDGER[name].items():
            file, _, test = where.partition("::")
            assert test in functions_in(file), f"{name} {option}: no {where}"
