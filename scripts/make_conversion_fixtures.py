#!/usr/bin/env python3
"""Writes the fixtures of tests/conversions.rs into models/conversions/: the reverse
directions of the corpus' conversion cases, each a source checkpoint and a TorchScript
target whose weights are the source's put together by real PyTorch ops.

Run with the project's Python (torch 2.11.0): `.venv/bin/python scripts/make_conversion_fixtures.py`.
Deterministic (fixed seed), every file a few tens of KB; the outputs are committed.

Each case folder has the layout of a corpus case (`../shared/bench/corpus/<case>/`):
source.pth, source.safetensors, target.pt (TorchScript), target_state.pth (the target's
weights as the conversion must produce them), io.pt (inputs and the source model's output,
which the converted target must reproduce) and case.json (`transforms`: what the
conversions are, in the corpus' vocabulary).

- qkv_concat: separate q/k/v projections (Hugging Face style) -> one fused `qkv` (timm
  style): the inverse of a split, a concatenation along dim 0.
- experts_unstack: stacked expert tensors (transformers v5 style `gate_up_proj`
  [E, 2I, H], `down_proj` [E, H, I]) -> per-expert `w1`, `w3`, `w2` linears (Mixtral
  style): the inverses of stack_of_concat and stack.
- experts_stack_transposed: per-expert linears -> experts stored input-major
  (`gate_up_proj` [E, H, 2I], `down_proj` [E, I, H], as `x @ W` uses them): stack and
  stack_of_concat with each part transposed.
"""

import json
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "models" / "conversions"
DIM, HEADS, LAYERS, CLASSES, FEATURES = 16, 2, 2, 5, 8
EXPERTS, HIDDEN, INTER = 4, 12, 20


class SeparateAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads, self.dim = HEADS, DIM
        self.q_proj = nn.Linear(DIM, DIM)
        self.k_proj = nn.Linear(DIM, DIM)
        self.v_proj = nn.Linear(DIM, DIM)
        self.out_proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        q = self.q_proj(x).reshape(b, n, self.heads, self.dim // self.heads).transpose(1, 2)
        k = self.k_proj(x).reshape(b, n, self.heads, self.dim // self.heads).transpose(1, 2)
        v = self.v_proj(x).reshape(b, n, self.heads, self.dim // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(a.transpose(1, 2).reshape(b, n, self.dim))


class FusedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads, self.dim = HEADS, DIM
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(a.transpose(1, 2).reshape(b, n, self.dim))


class Block(nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.attention = attention

    def forward(self, x):
        return x + self.attention(self.norm(x))


class AttentionNet(nn.Module):
    def __init__(self, fused):
        super().__init__()
        self.embed = nn.Linear(FEATURES, DIM)
        self.blocks = nn.ModuleList(
            [Block(FusedAttention() if fused else SeparateAttention()) for _ in range(LAYERS)]
        )
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(1))


class StackedExperts(nn.Module):
    def __init__(self):
        super().__init__()
        self.experts = EXPERTS
        self.gate_up_proj = nn.Parameter(torch.randn(EXPERTS, 2 * INTER, HIDDEN) * 0.2)
        self.down_proj = nn.Parameter(torch.randn(EXPERTS, HIDDEN, INTER) * 0.2)

    def forward(self, x, weights):
        out = torch.zeros_like(x)
        for e in range(self.experts):
            gate, up = F.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)
            out = out + weights[..., e : e + 1] * F.linear(F.silu(gate) * up, self.down_proj[e])
        return out


class InputMajorExperts(nn.Module):
    def __init__(self):
        super().__init__()
        self.experts = EXPERTS
        self.gate_up_proj = nn.Parameter(torch.randn(EXPERTS, HIDDEN, 2 * INTER) * 0.2)
        self.down_proj = nn.Parameter(torch.randn(EXPERTS, INTER, HIDDEN) * 0.2)

    def forward(self, x, weights):
        out = torch.zeros_like(x)
        for e in range(self.experts):
            gate, up = (x @ self.gate_up_proj[e]).chunk(2, dim=-1)
            out = out + weights[..., e : e + 1] * ((F.silu(gate) * up) @ self.down_proj[e])
        return out


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Linear(HIDDEN, INTER, bias=False)
        self.w2 = nn.Linear(INTER, HIDDEN, bias=False)
        self.w3 = nn.Linear(HIDDEN, INTER, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class PerExpert(nn.Module):
    def __init__(self):
        super().__init__()
        self.experts = nn.ModuleList([Expert() for _ in range(EXPERTS)])

    def forward(self, x, weights):
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            out = out + weights[..., e : e + 1] * expert(x)
        return out


class MoeLayer(nn.Module):
    def __init__(self, stacked, input_major=False):
        super().__init__()
        self.norm = nn.LayerNorm(HIDDEN)
        self.router = nn.Linear(HIDDEN, EXPERTS, bias=False)
        self.moe = (InputMajorExperts() if input_major else StackedExperts()) if stacked else PerExpert()

    def forward(self, x):
        h = self.norm(x)
        return x + self.moe(h, self.router(h).softmax(-1))


class MoeNet(nn.Module):
    def __init__(self, stacked, input_major=False):
        super().__init__()
        self.embed = nn.Embedding(64, HIDDEN)
        self.layers = nn.ModuleList([MoeLayer(stacked, input_major) for _ in range(LAYERS)])
        self.head = nn.Linear(HIDDEN, 64, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def attention_case():
    source, target = AttentionNet(fused=False).eval(), AttentionNet(fused=True).eval()
    src = source.state_dict()
    want, transforms = {}, []
    for i in range(LAYERS):
        s, t = f"blocks.{i}.attention.", f"blocks.{i}.attention."
        for leaf in ("weight", "bias"):
            parts = [f"{s}{p}_proj.{leaf}" for p in "qkv"]
            want[f"{t}qkv.{leaf}"] = torch.cat([src[p] for p in parts], 0)
            transforms.append({"kind": "concat", "source": parts, "target": [f"{t}qkv.{leaf}"], "dim": 0})
            want[f"{t}proj.{leaf}"] = src[f"{s}out_proj.{leaf}"]
    for k, v in src.items():
        if k in target.state_dict():
            want[k] = v
    x = torch.randn(2, 6, FEATURES)
    return source, target, want, transforms, (x,)


def experts_case():
    source, target = MoeNet(stacked=True).eval(), MoeNet(stacked=False).eval()
    src = source.state_dict()
    want, transforms = {}, []
    for i in range(LAYERS):
        s, t = f"layers.{i}.moe.", f"layers.{i}.moe.experts."
        gate, up = src[f"{s}gate_up_proj"].chunk(2, dim=1)
        down = src[f"{s}down_proj"]
        names = []
        for e in range(EXPERTS):
            want[f"{t}{e}.w1.weight"], want[f"{t}{e}.w3.weight"] = gate[e], up[e]
            want[f"{t}{e}.w2.weight"] = down[e]
            names += [f"{t}{e}.w1.weight", f"{t}{e}.w3.weight"]
        transforms.append({"kind": "split_of_unstack", "source": [f"{s}gate_up_proj"], "target": names,
                           "dim": 0, "group_size": 2, "concat_dim": 0, "sizes": [INTER, INTER]})
        transforms.append({"kind": "unstack", "source": [f"{s}down_proj"],
                           "target": [f"{t}{e}.w2.weight" for e in range(EXPERTS)], "dim": 0})
    for k, v in src.items():
        if k in target.state_dict():
            want[k] = v
    ids = torch.randint(0, 64, (1, 10))
    return source, target, want, transforms, (ids,)


def transposed_experts_case():
    source, target = MoeNet(stacked=False).eval(), MoeNet(stacked=True, input_major=True).eval()
    src = source.state_dict()
    want, transforms = {}, []
    for i in range(LAYERS):
        s, t = f"layers.{i}.moe.experts.", f"layers.{i}.moe."
        gate_up = [f"{s}{e}.{w}.weight" for e in range(EXPERTS) for w in ("w1", "w3")]
        down = [f"{s}{e}.w2.weight" for e in range(EXPERTS)]
        want[f"{t}gate_up_proj"] = torch.stack(
            [torch.cat([src[gate_up[2 * e]].t(), src[gate_up[2 * e + 1]].t()], 1) for e in range(EXPERTS)])
        want[f"{t}down_proj"] = torch.stack([src[d].t() for d in down])
        # The corpus' vocabulary has no transpose flag: the oracle transposes the sources.
        transforms.append({"kind": "stack_of_concat_t", "source": gate_up, "target": [f"{t}gate_up_proj"],
                           "dim": 0, "group_size": 2, "concat_dim": 1})
        transforms.append({"kind": "stack_t", "source": down, "target": [f"{t}down_proj"], "dim": 0})
    for k, v in src.items():
        if k in target.state_dict():
            want[k] = v
    ids = torch.randint(0, 64, (1, 10))
    return source, target, want, transforms, (ids,)


def write(name, source, target, want, transforms, inputs):
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    assert set(want) == set(target.state_dict()), sorted(set(want) ^ set(target.state_dict()))
    target.load_state_dict(want)
    with torch.no_grad():
        reference = source(*inputs)
        assert torch.allclose(target(*inputs), reference, atol=1e-5), name
    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    torch.save(sd, folder / "source.pth")
    save_file(sd, str(folder / "source.safetensors"))
    # The target is saved with fresh weights: only the conversion may make it match.
    fresh = target
    with torch.no_grad():
        # Fresh weights: only the conversion may make it match.
        for p in fresh.parameters():
            p.normal_(0, 0.2)
    torch.jit.script(fresh).save(str(folder / "target.pt"))
    torch.save({k: v.contiguous() for k, v in want.items()}, folder / "target_state.pth")
    torch.save({"inputs": list(inputs), "reference_output": reference}, folder / "io.pt")
    dummy = [
        {"shape": list(x.shape), "dtype": "int64", "value_range": [0, 64]}
        if x.dtype == torch.int64
        else {"shape": list(x.shape), "dtype": "float32", "distribution": "randn"}
        for x in inputs
    ]
    case = {"name": name, "transforms": transforms, "dummy_input": dummy}
    (folder / "case.json").write_text(json.dumps(case, indent=1) + "\n")


def main():
    torch.manual_seed(0)
    write("qkv_concat", *attention_case())
    write("experts_unstack", *experts_case())
    write("experts_stack_transposed", *transposed_experts_case())


if __name__ == "__main__":
    main()
