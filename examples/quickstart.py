"""Quickstart: one more conv layer should not change the classifier, the data order or dropout.

A model's feature extractor grows from one conv layer to three. Without blocks, every later
random operation shifts: the classifier's initial weights, the training batches, the dropout
masks. With blocks, only the part that changed changes.

Run: make demo
"""

from __future__ import annotations

import torch
from torch import nn

from reproducible_block import ReproducibleBlock, set_seed


class Net(nn.Module):
    def __init__(self, conv_layers: int, use_blocks: bool) -> None:
        super().__init__()
        with ReproducibleBlock("features", enabled=use_blocks):
            layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
            layers += [nn.Conv2d(8, 8, 3, padding=1) for _ in range(conv_layers - 1)]
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        with ReproducibleBlock("classifier", enabled=use_blocks):
            self.dropout = nn.Dropout(0.5)
            self.classifier = nn.Linear(8, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(images)))


def train(model: Net, steps: int = 3) -> dict[str, torch.Tensor]:
    """A few steps on random data: returns what the randomness decided."""
    images = torch.randn(64, 3, 8, 8)
    order = torch.randperm(64)[:16]  # the "data order"
    mask = model.dropout(torch.ones(8))  # one dropout mask
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        batch = images[order[step * 4 : step * 4 + 4]]
        loss = model(batch).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"order": order, "mask": mask}


def run(conv_layers: int, use_blocks: bool) -> dict[str, torch.Tensor]:
    set_seed(0)
    model = Net(conv_layers, use_blocks)
    classifier_init = model.classifier.weight.detach().clone()
    train_fn = ReproducibleBlock("train", enabled=use_blocks)(train)
    return {"classifier init": classifier_init, **train_fn(model)}


def main() -> None:
    rows = []
    for use_blocks in (False, True):
        one, three = run(1, use_blocks), run(3, use_blocks)
        for name in one:
            same = torch.equal(one[name], three[name])
            rows.append((name, "with blocks" if use_blocks else "without", same))
    print("Growing the feature extractor from 1 to 3 conv layers:\n")
    print(f"{'what':<18}{'without blocks':<18}{'with blocks':<18}")
    for name in ("classifier init", "order", "mask"):
        cells = ["unchanged" if same else "CHANGED" for n, _, same in rows if n == name]
        print(f"{name:<18}{cells[0]:<18}{cells[1]:<18}")
    with_blocks = [same for _, mode, same in rows if mode == "with blocks"]
    if not all(with_blocks):
        raise SystemExit("blocks failed to isolate the sections")


if __name__ == "__main__":
    main()
