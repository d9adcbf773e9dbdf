import pytest
import torch
from torch import nn

from mnist20k.config import PARAM_BUDGET, make_config
from mnist20k.errors import UsageError
from mnist20k.nets import DEFAULT_DROPOUT, build_model, count_params
from mnist20k.nets.builtin import PRESETS

# The seed document's torchsummary table: (layer type, output shape without batch, parameters).
SEED_TABLE = [
    ("Conv2d", (16, 26, 26), 144),
    ("ReLU", (16, 26, 26), 0),
    ("BatchNorm2d", (16, 26, 26), 32),
    ("Dropout2d", (16, 26, 26), 0),
    ("Conv2d", (32, 24, 24), 4608),
    ("ReLU", (32, 24, 24), 0),
    ("BatchNorm2d", (32, 24, 24), 64),
    ("Dropout2d", (32, 24, 24), 0),
    ("Conv2d", (20, 24, 24), 640),
    ("MaxPool2d", (20, 12, 12), 0),
    ("Conv2d", (32, 10, 10), 5760),
    ("ReLU", (32, 10, 10), 0),
    ("BatchNorm2d", (32, 10, 10), 64),
    ("Dropout2d", (32, 10, 10), 0),
    ("Conv2d", (16, 8, 8), 4608),
    ("ReLU", (16, 8, 8), 0),
    ("BatchNorm2d", (16, 8, 8), 32),
    ("Dropout2d", (16, 8, 8), 0),
    ("Conv2d", (16, 6, 6), 2304),
    ("ReLU", (16, 6, 6), 0),
    ("BatchNorm2d", (16, 6, 6), 32),
    ("Dropout2d", (16, 6, 6), 0),
    ("AvgPool2d", (16, 1, 1), 0),
    ("Conv2d", (10, 1, 1), 160),
]


def layer_table(model: nn.Module) -> list[tuple[str, tuple, int]]:
    """Every leaf layer in call order with its output shape and parameter count, like torchsummary."""
    rows = []

    def record(module, inputs, output):
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((type(module).__name__, tuple(output.shape[1:]), params))

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    return rows


def test_seed_network_with_the_seeds_dropout_matches_the_seed_table_layer_by_layer():
    model = build_model("base", dropout=0.15)
    assert layer_table(model) == SEED_TABLE
    assert count_params(model) == 18_448


def test_a_network_built_alone_is_the_one_training_builds_by_default():
    """One default: no Dropout2d layers, as the default recipe trains it; otherwise the seed's table."""
    assert make_config().dropout == DEFAULT_DROPOUT == 0
    assert layer_table(build_model("base")) == [row for row in SEED_TABLE if row[0] != "Dropout2d"]


def test_tiny_keeps_the_seeds_shape_at_7736_parameters():
    table = layer_table(build_model("tiny"))
    assert sum(row[2] for row in table) == 7_736
    assert [row[0] for row in table] == [row[0] for row in SEED_TABLE if row[0] != "Dropout2d"]
    assert table[-1] == ("Conv2d", (10, 1, 1), 160)


def test_micro_is_under_4000_parameters_with_ten_class_maps_averaged():
    table = layer_table(build_model("micro"))
    assert sum(row[2] for row in table) == 3_968
    assert [row[1] for row in table if row[0] == "Conv2d"] == [
        (8, 26, 26),
        (8, 24, 24),
        (12, 10, 10),
        (12, 8, 8),
        (10, 6, 6),
    ]
    assert table[-1] == ("AvgPool2d", (10, 1, 1), 0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_output_is_log_probabilities(name):
    model = build_model(name).eval()
    out = model(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))
    assert count_params(model) < PARAM_BUDGET


def test_unknown_model_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown model 'big'"):
        build_model("big")
