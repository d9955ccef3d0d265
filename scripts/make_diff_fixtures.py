#!/usr/bin/env python3
"""Writes the fixtures of `weightmap diff` into models/diff/ and what was done to them
into models/diff/expected.json.

Run with the project's Python (torch 2.11.0): `.venv/bin/python scripts/make_diff_fixtures.py`.
Deterministic (fixed seed), every file small. The outputs are committed.

- a.pt, a_again.pt: one small CNN exported to TorchScript twice, unchanged;
- b.pt: the same weights exported again after a refactor that renamed modules, with one
  tensor perturbed, one cast to float16, one buffer dropped and one parameter added;
- a.pth, a.safetensors: A's state dict as torch.save and safetensors (same names);
- b_names.safetensors: A's weights under B's names, nothing else changed.

Two of A's three blocks keep BatchNorm's initial values (zeros and ones, the same in many
tensors), so that content alone cannot pair them: the mapping engine must.
expected.json: "renamed" {A name: B name} for every tensor B keeps unchanged (names equal
for the modules not renamed), "changed"/"converted" [[A name, B name]], "removed" [A
names], "added" [B names].
"""

import json
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "diff"


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class NetA(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Block(8) for _ in range(3)])
        self.head = nn.Linear(8, 10)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, 3.0]))

    def forward(self, x):
        x = self.stem(x) * self.scale.mean()
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean((2, 3)))


class Layer(nn.Module):
    """Block, refactored: other attribute names."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.norm1(self.conv1(x)))


class NetB(nn.Module):
    """NetA refactored: blocks -> layers, head -> classifier (float16 weight), no scale
    buffer, a new logit_scale parameter; stem keeps its name."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList([Layer(8) for _ in range(3)])
        self.classifier = nn.Linear(8, 10)
        self.logit_scale = nn.Parameter(torch.full((10,), 1.5))

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        x = F.linear(x.mean((2, 3)), self.classifier.weight.float(), self.classifier.bias)
        return x * self.logit_scale


def rename(a_name):
    """A's name -> B's name, the refactor's renames."""
    return (
        a_name.replace("blocks.", "layers.")
        .replace(".conv.", ".conv1.")
        .replace(".bn.", ".norm1.")
        .replace("head.", "classifier.")
    )


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    a = NetA().eval()
    with torch.no_grad():
        # Block 0's BatchNorm gets distinct statistics; blocks 1 and 2 keep the initial
        # zeros and ones.
        bn = a.blocks[0].bn
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.num_batches_tracked.fill_(7)
    torch.jit.save(torch.jit.script(a), OUT / "a.pt")
    torch.jit.save(torch.jit.script(a), OUT / "a_again.pt")
    sd = {k: v.contiguous() for k, v in a.state_dict().items()}
    torch.save(sd, OUT / "a.pth")
    save_file(sd, OUT / "a.safetensors")
    save_file({rename(k): v for k, v in sd.items()}, OUT / "b_names.safetensors")

    perturbed, cast, dropped = "blocks.1.conv.weight", "head.weight", "scale"
    b = NetB().eval()
    b_sd = {}
    for k, v in sd.items():
        if k == dropped:
            continue
        v = v.clone()
        if k == perturbed:
            v += 1e-2 * torch.randn(v.shape)
        b_sd[rename(k)] = v
    b_sd["logit_scale"] = b.logit_scale.detach().clone()
    b.load_state_dict(b_sd)
    b.classifier.weight.data = b.classifier.weight.data.half()
    torch.jit.save(torch.jit.script(b), OUT / "b.pt")

    kept = [k for k in sd if k not in (perturbed, cast, dropped)]
    expected = {
        "renamed": {k: rename(k) for k in kept},
        "changed": [[perturbed, rename(perturbed)]],
        "converted": [[cast, rename(cast)]],
        "removed": [dropped],
        "added": ["logit_scale"],
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    # Check what was written, as torch reads it back.
    tb = torch.jit.load(OUT / "b.pt").state_dict()
    assert tb["classifier.weight"].dtype == torch.float16
    assert "scale" not in tb and "logit_scale" in tb
    assert all(torch.equal(tb[rename(k)], sd[k]) for k in kept)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
