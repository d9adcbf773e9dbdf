"""The seed document's training, as its notebook runs it: torchvision's MNIST through a DataLoader,
per-image PIL rotation up to 7 degrees, ToTensor and Normalize, batch 128, shuffled; the base network with
Dropout2d(0.15); SGD at a constant 0.02 with momentum 0.9; the loss read every step for the progress bar;
the 10,000 test images scored after every epoch.

throughput.py times its steps; whole_run.py times a whole run of it:

    python benchmarks/seed_pipeline.py --epochs 20 --device cpu   # prints one JSON line at the end
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from mnist20k.config import make_config
from mnist20k.data import MEAN, STD
from mnist20k.device import resolve_device
from mnist20k.nets import build_model

BATCH = 128
RECIPE = make_config("original")  # the seed document's settings: lr, momentum, dropout, rotation


def loader(data_dir, dev: torch.device, workers: int, train: bool) -> torch.utils.data.DataLoader:
    steps = [transforms.RandomRotation((-RECIPE.rotate, RECIPE.rotate), fill=(0,))] if train else []
    tf = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    ds = datasets.MNIST(str(data_dir), train=train, download=False, transform=tf)
    return torch.utils.data.DataLoader(
        ds, batch_size=BATCH, shuffle=train, num_workers=workers, pin_memory=dev.type == "cuda"
    )


def model_and_optimizer(dev: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = build_model("base", dropout=RECIPE.dropout).to(dev)
    return model, torch.optim.SGD(model.parameters(), lr=RECIPE.lr, momentum=RECIPE.momentum)


def train_step(model, optimizer, x, y, dev) -> None:
    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    loss = F.nll_loss(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss.item()  # the seed's progress bar shows every step's loss


@torch.no_grad()
def test(model, test_loader, dev) -> int:
    model.eval()
    correct = 0
    for x, y in test_loader:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        correct += (model(x).argmax(1) == y).sum().item()
    model.train()
    return correct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=os.environ.get("MNIST20K_DATA_DIR"))
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers, as the notebook's")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    dev = resolve_device(args.device)
    train_loader, test_loader = (loader(args.data_dir, dev, args.workers, train) for train in (True, False))
    model, optimizer = model_and_optimizer(dev)
    model.train()
    for _ in range(args.epochs):
        for x, y in train_loader:
            train_step(model, optimizer, x, y, dev)
        correct = test(model, test_loader, dev)
    total = len(test_loader.dataset)
    print(json.dumps({"epochs": args.epochs, "test_correct": correct, "test_accuracy": 100 * correct / total}))


if __name__ == "__main__":
    main()
