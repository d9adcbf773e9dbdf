"""Time to 99.4% and the steadiness of the last epochs, from hand-made records and from a real run's."""

import pytest

from mnist20k.config import make_config
from mnist20k.results import Reached, loop_seconds, lowest_of_last, time_to_target
from mnist20k.train import train


def records(*pairs):
    return [{"epoch": i, "test_accuracy": acc, "seconds": s} for i, (acc, s) in enumerate(pairs, start=1)]


def test_time_to_target_counts_every_epoch_up_to_the_first_at_the_target():
    m = records((99.1, 30.0), (99.39, 31.5), (99.40, 29.0), (99.2, 30.0), (99.5, 30.0))
    assert time_to_target(m) == Reached(epoch=3, seconds=90.5)
    assert time_to_target(m, target=99.45) == Reached(epoch=5, seconds=150.5)
    assert time_to_target(m, target=99.6) is None
    assert loop_seconds(m) == pytest.approx(150.5)


def test_lowest_of_last_looks_only_at_the_last_epochs():
    m = records((90.0, 1), (99.5, 1), (99.3, 1), (99.6, 1))
    assert lowest_of_last(m, 2) == 99.3
    assert lowest_of_last(m, 1) == 99.6
    assert lowest_of_last(m, 10) == 90.0


def full_records(*accuracies):
    keys = {"train_loss": 0.1, "test_loss": 0.1, "test_correct": 0, "test_total": 10_000, "lr": 0.01, "seconds": 30.0}
    return [{"epoch": i, "test_accuracy": acc, **keys} for i, acc in enumerate(accuracies, start=1)]


@pytest.mark.parametrize(
    "accuracies, line",
    [
        ((99.0, 99.41, 99.5), "time to 99.40%: 60.0 s (epoch 2; 90.0 s of training loop in all)"),
        ((99.0, 99.39), "never reached 99.40% (60.0 s of training loop)"),
    ],
)
def test_the_end_of_a_run_says_its_time_to_target(accuracies, line, tmp_path, capsys):
    from mnist20k.cli.render import TrainView

    TrainView(make_config(), tmp_path).finish(full_records(*accuracies), curves=True)
    assert line in capsys.readouterr().out.splitlines()


def test_a_run_records_the_loop_seconds_its_time_to_target_adds_up(data_dir):
    """A real run's records, with the target set to its best accuracy, which it first reaches after
    epoch 1 (it learns): the time is every epoch's seconds up to that one."""
    config = make_config(model="micro", epochs=3, max_batches=6, batch_size=16)
    metrics = train(config, data_dir=data_dir, device="cpu")
    assert all(r["seconds"] > 0 for r in metrics)
    best = max(r["test_accuracy"] for r in metrics)
    first = next(r["epoch"] for r in metrics if r["test_accuracy"] == best)
    assert first > 1
    expected = sum(r["seconds"] for r in metrics[:first])
    assert time_to_target(metrics, target=best) == Reached(first, pytest.approx(expected))
