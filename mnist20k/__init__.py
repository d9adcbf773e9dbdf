"""mnist20k: a CNN of under 20,000 parameters trained to 99.4%+ MNIST test accuracy in 20 epochs.

The library works without the CLI: build_model("base"), train(make_config(...)), evaluate(...).
Importing this package does not import torch; the names below load their modules on first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "build_model": "mnist20k.nets",
    "count_params": "mnist20k.nets",
    "PRESETS": "mnist20k.nets.builtin",
    "TrainConfig": "mnist20k.config",
    "make_config": "mnist20k.config",
    "train": "mnist20k.train",
    "evaluate": "mnist20k.evaluate",
    "evaluate_checkpoint": "mnist20k.evaluate",
    "load_checkpoint": "mnist20k.checkpoint",
    "load_split": "mnist20k.data",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        # Importing mnist20k.train binds the package attribute `train` to that module; put the
        # function back so that `from mnist20k import train` gives the function.
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mnist20k' has no attribute {name!r}")
