"""A network of the user's own, named by `--model file.py:Name` or `package.module:Name`: built, summarized,
trained, scored, resumed; every bad reference told in one line, with nothing written."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pytest
import torch
from conftest import one_error_line
from torch import nn
from typer.testing import CliRunner

from mnist20k.checkpoint import load_checkpoint
from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.errors import UsageError
from mnist20k.evaluate import predict_log_probs
from mnist20k.nets import ModelCodeError, build_model, count_params
from mnist20k.nets.anatomy import inspect_network
from mnist20k.train import train

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


NET = '''
import torch.nn.functional as F
from torch import nn

from helpers import block  # a module of the user's own, beside this file


class Net(nn.Module):
    """4 conv blocks, global average pooling, logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(block(1, 8), block(8, 8), nn.MaxPool2d(2), block(8, 12), block(12, 16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def make():
    """A factory: what --model may name instead of a class."""
    return Net()


class LogProbs(Net):
    def forward(self, x):
        return F.log_softmax(super().forward(x), dim=1)


SOMETHING = 3


def needs(width):
    return Net()


def sized(width, depth=1):
    """A factory with arguments: --arg width=6 --arg depth=2."""
    layers = [block(1, width), nn.MaxPool2d(2)] + [block(width, width) for _ in range(depth)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def fails():
    return Net(width=4)


def not_a_module():
    return "a network"


class Wide(Net):
    def forward(self, x):
        return super().forward(x).repeat(1, 2)


class Pair(Net):
    def forward(self, x):
        return super().forward(x), x


class ThreeChannels(Net):
    def forward(self, x):
        return super().forward(x.repeat(1, 3, 1, 1))


class TrainOnly(Net):
    def forward(self, x):
        if self.training:
            raise RuntimeError("fails in training mode only")
        return super().forward(x)
'''

HELPERS = """
from torch import nn


def block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder of the user's: their network, a helper it imports, broken files, a package."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "net.py").write_text(NET)
    (folder / "helpers.py").write_text(HELPERS)
    (folder / "syntax.py").write_text("from torch import nn\n\nclass Net(nn.Module)\n    pass\n")
    (folder / "imports.py").write_text("import torch\nimport no_such_package_here\n")
    package = folder / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(HELPERS + NET.split("\n\n\n", 1)[1])
    monkeypatch.chdir(folder)  # package.module references import from the working folder, as python -m does
    return folder


@pytest.mark.parametrize("ref", ["net.py:Net", "net.py:make", "userpkg.nets:Net", "net.py:LogProbs"])
def is_the_users_net(model: nn.Module, file, cls: str = "Net") -> bool:
    """The network NET defines (its class, parameter count and output), built from the code in `file`."""
    assert type(model).__name__ == cls
    assert Path(inspect.getsourcefile(type(model))).resolve() == file.resolve()
    assert count_params(model) == 88 + 592 + 888 + 1_760 + 170  # its four blocks (conv, BatchNorm) and head
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    return True


@pytest.mark.parametrize(
    "ref, file, cls",
    [("net.py:Net", "net.py", "Net"), ("net.py:make", "net.py", "Net"), ("userpkg.nets:Net", "userpkg/nets.py", "Net"),
     ("net.py:LogProbs", "net.py", "LogProbs")],
)  # fmt: skip
def test_a_class_a_factory_and_a_module_reference_build_a_network(user_dir, ref, file, cls):
    assert is_the_users_net(build_model(ref), user_dir / file, cls)


def test_an_absolute_path_works_from_any_folder(user_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_the_users_net(build_model(f"{user_dir / 'net.py'}:Net"), user_dir / "net.py")


def test_the_files_folder_is_importable_while_it_loads(tmp_path, monkeypatch):
    import sys

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "aside_only_here.py").write_text(HELPERS)
    (folder / "uses.py").write_text(NET.replace("from helpers import", "from aside_only_here import"))
    monkeypatch.chdir(tmp_path)
    assert is_the_users_net(build_model("elsewhere/uses.py:Net"), folder / "uses.py")
    assert str(folder) not in sys.path  # only while it loads


def test_logits_and_log_probabilities_score_alike(user_dir):
    torch.manual_seed(0)
    logits = build_model("net.py:Net").eval()
    log_probs = build_model("net.py:LogProbs").eval()
    log_probs.load_state_dict(logits.state_dict())
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    a, b = predict_log_probs(logits, images), predict_log_probs(log_probs, images)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a.exp().sum(1), torch.ones(20))


LINE_OF_FAILS = NET.splitlines().index("    return Net(width=4)") + 1
LINE_OF_FORWARD = NET.splitlines().index("        return self.head(self.body(x).mean((2, 3)))") + 1

# name -> (reference, exit code, text of the one line)
BAD = {
    "no file": ("missing.py:Net", 2, "no such file"),
    "no such name": ("net.py:Nope", 2, "has no 'Nope'"),
    "not callable": ("net.py:SOMETHING", 2, "is a int, not an nn.Module class or a function"),
    "a module": ("net.py:nn", 2, "is a module, not an nn.Module class"),
    "needs arguments": ("net.py:needs", 2, "needs arguments (width)"),
    "no module": ("no_such_pkg.nets:Net", 2, "no module named 'no_such_pkg'"),
    "no name": ("net.py:", 2, "is not a reference"),
    "no file or module": (":Net", 2, "is not a reference"),
    "not an identifier": ("net.py:1Net", 2, "is not a reference"),
    "not a file or module": ("my net:Net", 2, "neither a .py file nor a dotted module name"),
    "factory raises": ("net.py:fails", 1, f"net.py:{LINE_OF_FAILS}: TypeError: Net.__init__() got an unexpected"),
    "syntax error": ("syntax.py:Net", 1, "syntax.py:3: SyntaxError: expected ':'"),
    "import error": ("imports.py:Net", 1, "imports.py:2: ModuleNotFoundError: No module named 'no_such_package_here'"),
    # torch raises it, several frames down; the line the user needs is theirs
    "fails in forward": ("net.py:ThreeChannels", 1, f"net.py:{LINE_OF_FORWARD}: RuntimeError: Given groups=1"),
    "not a module returned": ("net.py:not_a_module", 1, "returned a str, not an nn.Module"),
    "wrong shape": ("net.py:Wide", 1, "came out as (2, 20), not (2, 10)"),
    "not a tensor": ("net.py:Pair", 1, "forward() returned a tuple, not a tensor"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_reference_is_one_line_and_writes_nothing(case, user_dir, data_dir):
    ref, code, text = BAD[case]
    before = sorted(p.name for p in user_dir.rglob("*") if "__pycache__" not in p.parts)
    one_error_line(invoke("summary", "--model", ref), code, text)
    train_args = ("train", "--model", ref, "--data-dir", data_dir, "--device", "cpu", "--out", user_dir / "run")
    one_error_line(invoke(*train_args), code, text)
    assert sorted(p.name for p in user_dir.rglob("*") if "__pycache__" not in p.parts) == before


def test_a_bad_reference_from_python_raises_the_same_errors(user_dir):
    with pytest.raises(UsageError, match="no such file"):
        build_model("missing.py:Net")
    with pytest.raises(ModelCodeError, match="came out as"):
        build_model("net.py:Wide")
    with pytest.raises(UsageError, match="neither a .py file"):
        make_config(model="my net:Net")
    with pytest.raises(UsageError, match="--dropout sets the built-in networks"):
        make_config(model="net.py:Net", dropout=0.1)


# ---- summary: receptive field and checklist ---------------------------------------------------

PADDED = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),  # 28x28, field 3, step 1
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),  # 14x14, 3 + 2*1 = 5, step 2
            nn.Conv2d(8, 8, 5, padding=2), nn.ReLU(),  # 14x14, 5 + 4*2 = 13
            nn.MaxPool2d(2),  # 7x7, 13 + 1*2 = 15, step 4
            nn.Dropout(0.1),
        )
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))
"""


def test_receptive_field_of_seed_is_the_layer_arithmetic():
    # 3x3 convs add 2 each (3, 5), the 1x1 conv nothing, the 2x2 pool 1 and doubles the step (6),
    # then three 3x3 convs at step 2 add 4 each: 10, 14, 18.
    field = inspect_network(build_model("base")).field
    assert (field.layer, field.grid, field.pixels, field.clipped) == ("block4", (6, 6), (18, 18), False)


def test_receptive_field_of_a_one_channel_network_sees_past_max_pool_routing():
    # One channel: a max-pool passes one image's gradient through one pixel of each window, so the field
    # needs many probe images. 3x3 conv: 3; 2x2 pool: 4, step 2; 3x3 conv: 4 + 2*2 = 8.
    torch.manual_seed(0)
    narrow = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3), nn.Flatten())
    assert inspect_network(narrow).field.pixels == (8, 8)


def test_receptive_field_with_padding_and_stride(tmp_path):
    (tmp_path / "padded.py").write_text(PADDED)
    anatomy = inspect_network(build_model(f"{tmp_path / 'padded.py'}:Net"))
    assert anatomy.field.pixels == (15, 15) and anatomy.field.grid == (7, 7) and not anatomy.field.clipped
    assert (anatomy.batchnorm, anatomy.dropout, anatomy.gap, anatomy.linear) == (0, 1, [], ["fc"])


def test_summary_of_your_network_prints_field_and_checklist(user_dir):
    result = invoke("summary", "--model", "net.py:Net")
    assert result.exit_code == 0, result.output
    params = count_params(build_model("net.py:Net"))
    assert f"Total params: {params:,}" in result.stdout
    assert "Receptive field: 14×14 pixels" in result.stdout  # 3, 5, pool 6, then +4 twice
    assert "✓ BatchNorm       4 layers" in result.stdout and "✗ Dropout         none" in result.stdout
    # the mean in forward() is no layer: it is seen from the shapes, the 16x8x8 map becoming 16 values
    assert "✓ GAP or FC head  global pooling in forward() (16×8×8 map to 16 values) and fully connected (head)" in (
        result.stdout
    )
    over = invoke("summary", "--model", "net.py:Net", "--budget", str(params - 1))
    assert over.exit_code == 1 and f"{params:,} / {params - 1:,} parameters (1 OVER)" in over.stdout
    one_error_line(invoke("summary", "--budget", "0"), 2, "Invalid value for '--budget'")


POOLS_IN_FORWARD = """import torch.nn.functional as F
from torch import nn


class ToClassMaps(nn.Module):  # the last conv gives ten maps; forward() averages them into the scores
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.BatchNorm2d(8), nn.Conv2d(8, 10, 1))

    def forward(self, x):
        return F.log_softmax(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1), dim=1)


class PooledThenConv(nn.Module):  # forward() pools, then a 1x1 conv makes the scores
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU())
        self.head = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        return F.log_softmax(self.head(F.adaptive_avg_pool2d(self.features(x), 1)).flatten(1), dim=1)


class Cropped(nn.Module):  # no pooling at all: ten of the map's values taken as they are
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).flatten(1)[:, :10]
"""


@pytest.mark.parametrize(
    "name, line",
    [
        ("ToClassMaps", "✓ GAP or FC head  global pooling in forward() (10×26×26 map to 10 values)"),
        ("PooledThenConv", "✓ GAP or FC head  global pooling in forward() (16×26×26 map to 16 values)"),
        ("Cropped", "✗ GAP or FC head  neither among the network's layers"),
    ],
)
def test_the_checklist_sees_global_pooling_done_in_forward(name, line, tmp_path):
    (tmp_path / "pools.py").write_text(POOLS_IN_FORWARD)
    result = invoke("summary", "--model", f"{tmp_path / 'pools.py'}:{name}")
    assert result.exit_code == 0, result.output
    assert line in result.stdout


# ---- train, eval, predict, resume, export -----------------------------------------------------

SHORT = ["--epochs", "2", "--max-batches", "3", "--batch-size", "32", "--device", "cpu"]


def test_train_eval_predict_resume_of_your_network(user_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(
            make_config(model="net.py:Net", epochs=2, max_batches=3, batch_size=32),
            data_dir=data_dir, out_dir=out, device="cpu", on_epoch=_stop_after_first,
        )  # fmt: skip
    ckpt = load_checkpoint(out)
    source = (user_dir / "net.py").resolve()
    assert ckpt["model"] == {
        "ref": "net.py:Net",
        "path": str(source),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "args": {},
    }  # where the code was and what it was called with, never the code

    # without --model, nothing imports the user's code: each command says which reference to pass
    for args in (["eval", out], ["predict", out, "x.png"], ["train", "--resume", out], ["export", out]):
        one_error_line(invoke(*args, "--data-dir", data_dir) if args[0] != "predict" else invoke(*args), 2,
                       "pass --model net.py:Net")  # fmt: skip

    resumed = invoke("train", "--resume", out, "--model", "net.py:Net", "--data-dir", data_dir, "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert "epoch 2/2" in resumed.stdout and "epoch 1/2" not in resumed.stdout
    uninterrupted = train(
        make_config(model="net.py:Net", epochs=2, max_batches=3, batch_size=32), data_dir=data_dir, device="cpu"
    )
    assert [r["test_correct"] for r in load_checkpoint(out)["metrics"]] == [r["test_correct"] for r in uninterrupted]

    scored = invoke("eval", out, "--model", "net.py:Net", "--data-dir", data_dir, "--device", "cpu", "--json")
    assert scored.exit_code == 0, scored.output
    assert f'"correct": {uninterrupted[-1]["test_correct"]}' in scored.stdout

    from PIL import Image

    digit = Image.new("L", (28, 28), 255)
    digit.paste(0, (12, 4, 16, 24))  # a dark stroke on white paper: a one
    digit.save(tmp_path / "one.png")
    read = invoke("predict", out, tmp_path / "one.png", "--model", "net.py:Net", "--device", "cpu", "--json")
    assert read.exit_code == 0 and '"digit"' in read.stdout, read.output


def _stop_after_first(record):
    if record["epoch"] == 1:
        raise KeyboardInterrupt


def test_an_error_in_training_mode_is_one_line_at_the_users_line(user_dir, data_dir, tmp_path):
    line = NET.splitlines().index('            raise RuntimeError("fails in training mode only")') + 1
    result = invoke("train", "--model", "net.py:TrainOnly", *SHORT, "--data-dir", data_dir, "--out", tmp_path / "r")
    one_error_line(result, 1, f"--model net.py:TrainOnly: net.py:{line}: RuntimeError: fails in training mode only")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_train_header_states_parameters_against_the_budget(user_dir, data_dir, tmp_path):
    result = invoke("train", "--model", "net.py:Net", *SHORT, "--data-dir", data_dir, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    params = count_params(build_model("net.py:Net"))
    assert f"training net.py:Net ({params:,} parameters, within the 20,000 budget)" in result.stdout


def test_a_changed_source_warns_and_still_loads(user_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    train(make_config(model="net.py:Net", epochs=1, max_batches=2, batch_size=32), data_dir=data_dir, out_dir=out)
    same = invoke("eval", out, "--model", "net.py:Net", "--data-dir", data_dir, "--device", "cpu")
    assert same.exit_code == 0 and "warning" not in same.stderr, same.output
    (user_dir / "net.py").write_text(NET + "\n# a comment changes the file, not the weights\n")
    changed = invoke("eval", out, "--model", "net.py:Net", "--data-dir", data_dir, "--device", "cpu")
    assert changed.exit_code == 0, changed.output
    assert changed.stderr.strip() == f"warning: {(user_dir / 'net.py').resolve()} has changed since this checkpoint " \
        "was saved; loading its weights into it as it is"  # fmt: skip
    (user_dir / "net.py").write_text(NET.replace("block(12, 16)", "block(12, 24)").replace("(16, 10)", "(24, 10)"))
    wider = invoke("eval", out, "--model", "net.py:Net", "--data-dir", data_dir)
    assert wider.exit_code == 1 and "Traceback" not in wider.output
    warning, error = wider.stderr.strip().splitlines()
    assert warning.startswith("warning: ") and error.startswith(f"error: {out} holds net.py:Net (")
    assert "and its weights do not fit net.py:Net as asked: " in error


OTHER_NET = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 28)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return torch.log_softmax(self.head(self.conv(x).flatten(1)), dim=1)
"""


def test_a_checkpoint_asked_for_as_another_network_says_what_it_holds(user_dir, data_dir, tmp_path):
    """What the checkpoint holds and what was asked, in one line; "changed" only for the same file."""
    out = tmp_path / "run"
    train(make_config(model="net.py:Net", epochs=1, max_batches=2, batch_size=32), data_dir=data_dir, out_dir=out)
    params = count_params(build_model("net.py:Net"))
    (user_dir / "other.py").write_text(OTHER_NET)
    for asked in ("tiny", "other.py:Net"):
        result = invoke("eval", out, "--model", asked, "--data-dir", data_dir, "--device", "cpu")
        line = one_error_line(result, 1, "is another network")
        assert line == f"error: {out} holds net.py:Net ({params:,} parameters); --model {asked} is another network"
        assert "changed" not in result.stderr
    base = tmp_path / "base"
    train(make_config(epochs=1, max_batches=1), data_dir=data_dir, out_dir=base)
    line = one_error_line(invoke("eval", base, "--model", "tiny", "--data-dir", data_dir), 1, "another network")
    held = "base (18,448 parameters, widths=[16, 32, 20, 32, 16, 16])"
    assert line == f"error: {base} holds {held}; --model tiny is another network"
