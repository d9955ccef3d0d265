#!/usr/bin/env python3
"""Writes the fixtures of tests/order.rs into models/: a pair of models whose tensor names
say nothing about which layer is which, so that only execution order can tell them apart.

Run with the project's Python (torch 2.11.0): `.venv/bin/python scripts/make_order_fixtures.py`.
Deterministic (fixed seed), every file a few KB; the outputs are committed.

- models/order_source.safetensors, models/order_source.pth: a stack of three look-alike
  Linear(8, 8) layers, `layers.0` .. `layers.2`, run in index order.
- models/order_target.pt: the same network refactored into three differently named Linear
  layers, registered as gamma, alpha, beta (TorchScript lists them so) but run beta, alpha,
  gamma, so registration order, alphabetical order and execution order all differ.
- models/order_truth.json: {source name: target name}, the weights the target was built from.
"""

import json
import pathlib

import torch
import torch.nn as nn
from safetensors.torch import save_file

MODELS = pathlib.Path(__file__).resolve().parent.parent / "models"
WIDTH = 8
# Target layer for each source layer, in execution order (layers.0 runs first).
RUN_ORDER = ["beta", "alpha", "gamma"]


class Source(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in RUN_ORDER])

    def forward(self, x):
        return self.layers(x)


class Target(nn.Module):
    def __init__(self):
        super().__init__()
        # Registration order (gamma, alpha, beta) is neither execution nor alphabetical order.
        self.gamma = nn.Linear(WIDTH, WIDTH)
        self.alpha = nn.Linear(WIDTH, WIDTH)
        self.beta = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        return self.gamma(self.alpha(self.beta(x)))


def main():
    torch.manual_seed(0)
    source = Source().eval()
    target = Target().eval()
    truth = {}
    with torch.no_grad():
        for i, name in enumerate(RUN_ORDER):
            layer = getattr(target, name)
            for leaf in ("weight", "bias"):
                getattr(layer, leaf).copy_(getattr(source.layers[i], leaf))
                truth[f"layers.{i}.{leaf}"] = f"{name}.{leaf}"
    x = torch.randn(2, WIDTH)
    assert torch.equal(source(x), target(x)), "the target must compute what the source does"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(MODELS / "order_source.safetensors"))
    torch.save(state, MODELS / "order_source.pth")
    torch.jit.script(target).save(str(MODELS / "order_target.pt"))
    (MODELS / "order_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    print("wrote models/order_source.{safetensors,pth}, models/order_target.pt, models/order_truth.json")


if __name__ == "__main__":
    main()
