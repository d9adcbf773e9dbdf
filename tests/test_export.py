"""export: ONNX and TorchScript files that give PyTorch's answers, and refuse to be written when they don't."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from mnist20k.checkpoint import load_checkpoint
from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.export import TOLERANCE, inference_network
from mnist20k.nets import rebuild
from mnist20k.train import train

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'mnist20k[onnx]'")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("export") / "run"
    train(
        make_config(epochs=1, max_batches=4, batch_size=32, dropout=0.1), data_dir=data_dir, out_dir=out, device="cpu"
    )
    return out


def test_the_inference_network_has_no_batchnorm_or_dropout_and_gives_the_same_outputs(run):
    model = rebuild(load_checkpoint(run)).module.eval()
    folded = inference_network(rebuild(load_checkpoint(run)).module)
    kinds = {type(m) for m in folded.modules()}
    assert nn.BatchNorm2d not in kinds and nn.Dropout2d not in kinds and nn.Conv2d in kinds
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        # Folding reorders float32 products and sums: held to the bound export holds its files to.
        torch.testing.assert_close(folded(x), model(x), atol=TOLERANCE, rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("pt2", "model.pt2"), ("torchscript", "model.pt")])
def test_export_writes_a_checked_file_beside_the_checkpoint(fmt, name, run, data_dir):
    result = invoke("export", run, "--format", fmt, "--data-dir", data_dir, "--overwrite")
    assert result.exit_code == 0, result.output
    path = run / name
    assert f"wrote {path}" in result.stdout and "the same digit for every image" in result.stdout
    accuracies = re.findall(r"(\d+\.\d\d)% in", result.stdout)
    assert len(accuracies) == 2 and accuracies[0] == accuracies[1]
    if fmt == "torchscript":
        extra = {"mnist20k.json": ""}
        loaded = torch.jit.load(str(path), _extra_files=extra)
        assert json.loads(extra["mnist20k.json"])["normalize_std"] == "0.3081"
        assert loaded(torch.zeros(37, 1, 28, 28)).shape == (37, 10)
    if fmt == "pt2":  # as docs/export.md loads it: torch.export.load alone, mnist20k not importable
        code = (
            "import json, sys; sys.modules['mnist20k'] = None; import torch\n"
            "extra = {'mnist20k.json': ''}\n"
            "net = torch.export.load(sys.argv[1], extra_files=extra).module()\n"
            "print(json.loads(extra['mnist20k.json'])['normalize_std'], tuple(net(torch.zeros(37, 1, 28, 28)).shape))"
        )
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
        assert done.stdout.split("\n")[0] == "0.3081 (37, 10)", done.stderr


def test_onnx_export_has_no_batchnorm_node_a_dynamic_batch_and_its_metadata(run, data_dir):
    import onnx

    path = run / "batch.onnx"
    assert invoke("export", run, "--out", path, "--data-dir", data_dir).exit_code == 0
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "image"
    for n in (1, 37):
        assert session.run(None, {"image": torch.zeros(n, 1, 28, 28).numpy()})[0].shape == (n, 10)
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta["normalize_mean"], meta["normalize_std"]) == ("0.1307", "0.3081")
    assert float(meta["test_accuracy"]) == load_checkpoint(run)["metrics"][-1]["test_accuracy"]


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_a_wrong_export_is_caught_and_nothing_is_written(fmt, run, data_dir, tmp_path, monkeypatch):
    import mnist20k.export

    real = mnist20k.export.inference_network

    def perturbed(model):
        graph = real(model)
        with torch.no_grad():
            next(graph.parameters()).add_(0.05)  # a slightly wrong first convolution
        return graph

    monkeypatch.setattr(mnist20k.export, "inference_network", perturbed)
    out = tmp_path / "wrong"
    result = invoke("export", run, "--format", fmt, "--out", out, "--data-dir", data_dir)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match the PyTorch network" in lines[0] and "nothing was written" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_refused_without_overwrite(run, tmp_path):
    out = tmp_path / "keep.onnx"
    out.write_bytes(b"mine")
    result = invoke("export", run, "--out", out, "--no-verify")
    assert result.exit_code == 2 and "pass --overwrite" in result.stderr
    assert out.read_bytes() == b"mine"
    result = invoke("export", run, "--out", out, "--no-verify", "--overwrite")
    assert result.exit_code == 0 and "not checked against PyTorch (--no-verify)" in result.stdout
    assert out.read_bytes() != b"mine"


def test_without_the_onnx_extra_one_line_says_how_to_get_it(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    result = invoke("export", run, "--out", tmp_path / "m.onnx", "--no-verify")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: ONNX export needs the onnx extra: pip install 'mnist20k[onnx]'"
    assert list(tmp_path.iterdir()) == []


def documented_example() -> str:
    text = (ROOT / "docs" / "export.md").read_text()
    return re.search(r"```python\n(# Classify with onnxruntime and NumPy.*?)```", text, re.S).group(1)


def test_the_documented_example_classifies_with_onnxruntime_and_numpy_alone(run, data_dir, tmp_path):
    model_path = tmp_path / "model.onnx"
    assert invoke("export", run, "--out", model_path, "--no-verify").exit_code == 0
    code = (
        documented_example()
        .replace("runs/cpu-final/model.onnx", str(model_path))
        .replace('Path.home() / ".cache/mnist20k"', f"Path({str(data_dir)!r})")
    )
    no_torch = "import sys; sys.modules['torch'] = None\n"  # the example must not need PyTorch
    done = subprocess.run(
        [sys.executable, "-c", no_torch + code], capture_output=True, text=True, check=True, timeout=300
    )
    printed = [int(d) for d in re.findall(r"\d", done.stdout.strip().splitlines()[-1])]
    model = rebuild(load_checkpoint(run)).module.eval()
    from mnist20k.data import load_split, normalize

    test_images, _ = load_split(data_dir, train=False)
    with torch.no_grad():
        assert printed == model(normalize(test_images[:5])).argmax(1).tolist()


BRANCHES = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 28)

    def forward(self, x):
        if x.sum() > 0:  # depends on the data: torch.fx cannot trace it
            x = -x
        return torch.log_softmax(self.conv(x).flatten(1), dim=1)
"""


def test_a_network_that_cannot_be_traced_is_one_line(data_dir, tmp_path):
    (tmp_path / "branches.py").write_text(BRANCHES)
    ref = f"{tmp_path / 'branches.py'}:Net"
    run = tmp_path / "run"
    trained = invoke("train", "--model", ref, "--epochs", 1, "--max-batches", 1, "--device", "cpu",
                     "--data-dir", data_dir, "--out", run)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    result = invoke("export", run, "--model", ref, "--out", tmp_path / "m.onnx", "--data-dir", data_dir)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert (
        line.startswith("error: cannot export this network: torch.fx cannot trace its forward() (") and "\n" not in line
    )
    assert not (tmp_path / "m.onnx").exists()


def test_verify_without_onnxruntime_says_how_to_get_it_or_skip_the_check(run, data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = invoke("export", run, "--out", tmp_path / "m.onnx", "--data-dir", data_dir)
    assert result.exit_code == 1 and result.stderr.strip() == (
        "error: checking an ONNX export needs onnxruntime: pip install 'mnist20k[onnx]', or pass --no-verify"
    )
    assert list(tmp_path.iterdir()) == []
    assert invoke("export", run, "--out", tmp_path / "m.onnx", "--no-verify").exit_code == 0


def test_no_verify_is_refused_beside_data_dir_given_but_not_beside_the_environments(run, data_dir, tmp_path):
    """--data-dir with --no-verify would change nothing and is refused; $MNIST20K_DATA_DIR, set for every command,
    is not an option given."""
    out = tmp_path / "m.onnx"
    env = {"MNIST20K_DATA_DIR": str(data_dir)}
    assert runner.invoke(app, ["export", str(run), "--no-verify", "--out", str(out)], env=env).exit_code == 0
    given = runner.invoke(app, ["export", str(run), "--no-verify", "--out", str(out), "--overwrite", "--data-dir",
                                str(data_dir)])  # fmt: skip
    assert given.exit_code == 2 and "with --no-verify drop it" in given.stderr
