"""A trained network in a file other runtimes read: ONNX, a torch.export program (pt2) or TorchScript (deprecated
upstream), checked against PyTorch.

The exported network is the inference network: eval mode, no dropout, and every BatchNorm folded into
the convolution that follows it. The seed's blocks run conv -> ReLU -> BatchNorm, so a BatchNorm cannot
go into the convolution before it (the ReLU is in between); it is an affine map per channel, and the next
convolution (no padding) or global average pool + 1x1 convolution is linear, so it goes into that one.

torch is imported where it is used: the command line's --help reads EXPORT_FORMATS.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist20k.errors import Mnist20kError, UsageError
from mnist20k.files import check_writable, write_file
from mnist20k.results import split

if TYPE_CHECKING:
    import torch
    from torch import fx, nn

# each format, and the file it writes by default
EXPORT_FORMATS = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.pt"}
TOLERANCE = 1e-4  # largest difference allowed between the exported network's outputs and PyTorch's
EXTRA_HINT = "pip install 'mnist20k[onnx]'"


@dataclass
class Verified:
    pytorch_accuracy: float  # percent, the checkpoint's network in PyTorch
    exported_accuracy: float  # percent, the exported file in its own runtime
    max_difference: float  # largest absolute difference of any output


def inference_network(model: nn.Module) -> fx.GraphModule:
    """`model` in eval mode as a traced graph without Dropout layers, each BatchNorm folded into the next
    convolution, whose weights change in place (pass a network you no longer need). A BatchNorm that
    feeds anything else (a padded convolution, in a network of your own) stays as it is."""
    import torch
    from torch import fx, nn

    model = model.eval()
    try:
        graph = fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow in a network of the user's own
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Mnist20kError(f"cannot export this network: torch.fx cannot trace its forward() ({first})") from None
    modules = dict(graph.named_modules())
    # Dropout first: in eval mode it passes its input on, and a BatchNorm then feeds the conv directly.
    for kinds in ((nn.Dropout, nn.Dropout2d, nn.Identity), (nn.BatchNorm2d,)):
        for node in list(graph.graph.nodes):
            layer = modules.get(node.target) if node.op == "call_module" else None
            if not isinstance(layer, kinds):
                continue
            if isinstance(layer, nn.BatchNorm2d):
                with torch.no_grad():
                    if not _fold_into_next_conv(node, layer, modules):
                        continue
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.graph.lint()
    graph.recompile()
    graph.delete_all_unused_submodules()
    return graph


def _fold_into_next_conv(node: fx.Node, bn: nn.BatchNorm2d, modules: dict) -> bool:
    """bn(x) = scale * x + shift per channel; conv(scale * x + shift) = conv'(x) with the weights scaled per
    input channel and the shift's contribution added to the bias. Exact for a convolution without padding,
    also after an average pool (the pool of scale * x + shift is scale * pool(x) + shift). False, and
    nothing changed, where the BatchNorm feeds anything else: padding would pad with zeros, not shift."""
    import torch
    from torch import nn

    nxt = _only_user(node)
    if nxt is not None and isinstance(modules.get(nxt.target), nn.AvgPool2d):
        nxt = _only_user(nxt)
    conv = modules.get(nxt.target) if nxt is not None and nxt.op == "call_module" else None
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or any(conv.padding) or conv.padding_mode != "zeros":
        return False
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    conv.bias = nn.Parameter(bias + (conv.weight * shift[None, :, None, None]).sum((1, 2, 3)))
    conv.weight.mul_(scale[None, :, None, None])
    return True


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def metadata(ckpt: dict) -> dict[str, str]:
    """What a user of the file needs besides the weights: how to prepare the input, what it scored."""
    from mnist20k.data import MEAN, STD

    last = ckpt["metrics"][-1] if ckpt["metrics"] else {}
    scored = split(last) if last else "test"
    return {
        "producer": "mnist20k",
        "model": json.dumps(ckpt["model"]),
        "input": "image: (N, 1, 28, 28) float32, pixels in [0, 1] normalised as (x - mean) / std",
        "normalize_mean": str(MEAN),
        "normalize_std": str(STD),
        "output": "log_probs: (N, 10) log-probabilities of the digits 0-9",
        f"{scored}_accuracy": str(last.get(f"{scored}_accuracy", "")),
    }


def onnx_bytes(network: nn.Module, props: dict[str, str]) -> bytes:
    """ONNX through torch.onnx, with a dynamic batch and the metadata in metadata_props."""
    import torch

    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter is built on it)
    except ImportError:
        raise Mnist20kError(f"ONNX export needs the onnx extra: {EXTRA_HINT}") from None

    program = torch.onnx.export(
        network,
        (torch.zeros(2, 1, 28, 28),),
        input_names=["image"],
        output_names=["log_probs"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    for key, value in props.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return proto.SerializeToString()


def pt2_bytes(network: nn.Module, props: dict[str, str]) -> bytes:
    """The program torch.export makes, with a dynamic batch, saved by torch.export.save; the metadata as an
    extra file (mnist20k.json). torch.export.load reads it back, with nothing of mnist20k."""
    import torch

    program = torch.export.export(
        network, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"mnist20k.json": json.dumps(props)})
    return buffer.getvalue()


def torchscript_bytes(network: nn.Module, props: dict[str, str]) -> bytes:
    """TorchScript by tracing, the metadata as an extra file (mnist20k.json)."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # PyTorch now points to torch.export; TorchScript is still what many runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(network, torch.zeros(2, 1, 28, 28))
        torch.jit.save(traced, buffer, _extra_files={"mnist20k.json": json.dumps(props)})
    return buffer.getvalue()


def run_exported(data: bytes, fmt: str, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The exported network's (N, 10) outputs on normalised images, in its own runtime."""
    import torch

    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    if fmt == "pt2":
        loaded = torch.export.load(io.BytesIO(data)).module()
        with torch.no_grad():
            return torch.cat([loaded(x) for x in batches])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            loaded = torch.jit.load(io.BytesIO(data))
        with torch.no_grad():
            return torch.cat([loaded(x) for x in batches])
    try:
        import onnxruntime
    except ImportError:
        raise Mnist20kError(f"checking an ONNX export needs onnxruntime: {EXTRA_HINT}, or pass --no-verify") from None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.cat([torch.from_numpy(session.run(None, {"image": x.numpy()})[0]) for x in batches])


def verify(reference: nn.Module, data: bytes, fmt: str, images: torch.Tensor, labels: torch.Tensor) -> Verified:
    """The exported network against the PyTorch one on every image: the same label for each, and outputs
    within TOLERANCE. Raises Mnist20kError on any difference."""
    import torch

    from mnist20k.data import normalize

    x = normalize(images).contiguous()
    with torch.no_grad():
        expected = reference.eval()(x)
    got = run_exported(data, fmt, x)
    difference = (got - expected).abs().max().item()
    disagree = int((got.argmax(1) != expected.argmax(1)).sum())
    if disagree or not difference <= TOLERANCE:
        raise Mnist20kError(
            f"the {fmt} export does not match the PyTorch network: {disagree} of {len(x):,} test images get "
            f"another label, outputs differ by up to {difference:.2g} (allowed {TOLERANCE:g}); nothing was written"
        )
    return Verified(
        pytorch_accuracy=100.0 * (expected.argmax(1) == labels).float().mean().item(),
        exported_accuracy=100.0 * (got.argmax(1) == labels).float().mean().item(),
        max_difference=difference,
    )


def export(
    checkpoint: Path | str,
    fmt: str = "onnx",
    out: Path | str | None = None,
    overwrite: bool = False,
    check: bool = True,
    data_dir: Path | str | None = None,
    model: str | None = None,
    args: dict | None = None,
) -> tuple[Path, Verified | None]:
    """Write the checkpoint's network as `fmt` to `out` (default: model.onnx / model.pt beside the
    checkpoint). With `check`, the exported network is first run on the 10,000 test images beside the
    PyTorch one, and nothing is written unless they match; the file is written atomically."""
    from mnist20k.checkpoint import find_checkpoint, load_checkpoint
    from mnist20k.data import load_split
    from mnist20k.nets import rebuild

    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    source = find_checkpoint(checkpoint)
    path = Path(out) if out is not None else source.parent / EXPORT_FORMATS[fmt]
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it, or --out another file")
    check_writable(path)
    ckpt = load_checkpoint(source)
    network = inference_network(rebuild(ckpt, model, args, where=str(checkpoint)).module)
    write = {"onnx": onnx_bytes, "pt2": pt2_bytes, "torchscript": torchscript_bytes}[fmt]
    data = write(network, metadata(ckpt))
    verified = None
    if check:
        trained = rebuild(ckpt, model, args, where=str(checkpoint)).module
        verified = verify(trained, data, fmt, *load_split(data_dir, train=False))
    write_file(path, data)
    return path, verified
