#!/usr/bin/env python3
"""Writes the fixtures of tests/integration/lookalikes.rs into models/lookalikes/: model
pairs whose same-shape look-alikes neither names nor shapes tell apart, where a
checkpoint's key order (registration order) points the wrong way or says nothing, and only
the evidence of the two models decides (one renaming across repeated blocks, siblings
anchored in the target's execution order, ordinal families).

Run with the project's Python (torch 2.11.0): `.venv/bin/python scripts/make_lookalike_fixtures.py`.
Deterministic (fixed seed), every file a few tens of KB; the outputs are committed.

Each case folder has the layout of a corpus case: source.pth (keys in registration order),
source.safetensors (keys sorted), target.pt (TorchScript), case.json (`ground_truth`:
{source name: target name}). The target is built from the source's weights and checked to
compute the same function.

- shortcut: residual bottleneck blocks (ratio 1, grouped 3x3) whose projection shortcut has
  exactly the shape of the first conv of the residual branch. The source (`s1.b1.proj`,
  `s1.b1.f.a`/`a_bn`/`b`/`b_bn`/`c`/`c_bn`) registers and runs the shortcut first; the
  target (`layer1.0.conv1`/`bn1`/.../`downsample.0`/`.1`) registers it last and runs it
  after the branch. In blocks without a shortcut, `f.a` and `f.c` look alike too.
- moved_block: stages whose boundary moves. The source opens each stage with its
  downsampling step (`stages.1.downsample`, then `stages.1.blocks.0`, ...); the target
  keeps the downsampling step and the block after it at the end of the previous stage
  (`stages.0.layers.2` / `stages.0.layers.3`). Same blocks, same execution order.
- post_norm: BERT-style encoder layers (`attention.output.LayerNorm`, `output.LayerNorm`)
  against blocks with `norm1` / `norm2` run after the attention and the MLP.
- repeated_rule: repeated layers (`layers.N.inp` / `layers.N.out`) against blocks
  (`blocks.N.alpha` / `blocks.N.beta`, registered beta first, run alpha first). Only the
  first layer's shapes tell its two linears apart; the other layers follow the same
  renaming.
- pre_norm: pre-norm decoder layers (`input_layernorm`, `post_attention_layernorm`,
  `self_attn.*_proj`, `mlp.*_proj`) against `attn_norm` / `ffn_norm`, `attn.w*`, `ffn.w*`.
"""

import json
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "models" / "lookalikes"


def bn(c):
    m = nn.BatchNorm2d(c)
    with torch.no_grad():
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
    return m


# ---------------------------------------------------------------- shortcut
GROUPS = 4
WIDTHS = [8, 16, 32]  # stem width, then each stage's width
BLOCKS = 2


class SrcBranch(nn.Module):
    def __init__(self, cin, w, stride):
        super().__init__()
        self.a = nn.Conv2d(cin, w, 1, bias=False)
        self.a_bn = bn(w)
        self.b = nn.Conv2d(w, w, 3, stride, 1, groups=GROUPS, bias=False)
        self.b_bn = bn(w)
        self.c = nn.Conv2d(w, w, 1, bias=False)
        self.c_bn = bn(w)

    def forward(self, x):
        x = F.relu(self.a_bn(self.a(x)))
        x = F.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class SrcBlock(nn.Module):
    def __init__(self, cin, w, stride):
        super().__init__()
        self.has_proj = cin != w or stride != 1
        if self.has_proj:
            # Registered (and run) before the branch.
            self.proj = nn.Conv2d(cin, w, 1, stride, bias=False)
            self.bn = bn(w)
        self.f = SrcBranch(cin, w, stride)

    def forward(self, x):
        if self.has_proj:
            s = self.bn(self.proj(x))
        else:
            s = x
        return F.relu(s + self.f(x))


class ShortcutSource(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False))
        self.stem.add_module("bn", bn(WIDTHS[0]))
        cin = WIDTHS[0]
        for s, w in enumerate(WIDTHS[1:], 1):
            stage = nn.Sequential()
            for b in range(BLOCKS):
                stage.add_module(f"b{b + 1}", SrcBlock(cin, w, 2 if b == 0 and s > 1 else 1))
                cin = w
            self.add_module(f"s{s}", stage)
        self.head = nn.Sequential()
        self.head.add_module("fc", nn.Linear(cin, 5))

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.s2(self.s1(x))
        return self.head(x.mean((2, 3)))


class TgtBlock(nn.Module):
    def __init__(self, src: SrcBlock):
        super().__init__()
        f = src.f
        self.conv1, self.bn1 = f.a, f.a_bn
        self.conv2, self.bn2 = f.b, f.b_bn
        self.conv3, self.bn3 = f.c, f.c_bn
        # Registered last; run after the branch.
        self.downsample = nn.Sequential(src.proj, src.bn) if src.has_proj else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


class ShortcutTarget(nn.Module):
    def __init__(self, src: ShortcutSource):
        super().__init__()
        self.conv1, self.bn1 = src.stem.conv, src.stem.bn
        for s in range(1, len(WIDTHS)):
            stage = getattr(src, f"s{s}")
            self.add_module(f"layer{s}", nn.Sequential(*[TgtBlock(b) for b in stage]))
        self.fc = src.head.fc

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean((2, 3)))


# ---------------------------------------------------------------- moved_block
MOVED_WIDTHS = [8, 12, 16]
MOVED_BLOCKS = 4


class Block(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.conv1 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn1 = bn(w)
        self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn2 = bn(w)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.bn = bn(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class MovedSource(nn.Module):
    """Each stage opens with its downsampling step."""

    def __init__(self):
        super().__init__()
        self.stem = Down(3, MOVED_WIDTHS[0])
        stages = []
        for s, w in enumerate(MOVED_WIDTHS):
            first = [Down(MOVED_WIDTHS[s - 1], w)] if s > 0 else []
            stages.append(nn.Sequential(*first, *[Block(w) for _ in range(MOVED_BLOCKS)]))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(MOVED_WIDTHS[-1], 5)

    def forward(self, x):
        x = self.stem(x)
        for st in self.stages:
            x = st(x)
        return self.head(x.mean((2, 3)))


class MovedTarget(nn.Module):
    """The downsampling step and the first block after it close the previous stage."""

    def __init__(self, src: MovedSource):
        super().__init__()
        self.stem = src.stem
        seq = [m for st in src.stages for m in st]  # execution order of the source
        # A stage ends right after the first block that follows a downsampling step.
        stages, cur = [], []
        for k, m in enumerate(seq):
            cur.append(m)
            if k > 0 and isinstance(seq[k - 1], Down):
                stages.append(nn.Sequential(*cur))
                cur = []
        stages.append(nn.Sequential(*cur))
        self.stages = nn.ModuleList(stages)
        self.head = src.head

    def forward(self, x):
        x = self.stem(x)
        for st in self.stages:
            x = st(x)
        return self.head(x.mean((2, 3)))


# ---------------------------------------------------------------- post_norm
DIM, LAYERS = 16, 2


class BertSelf(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(DIM, DIM)
        self.key = nn.Linear(DIM, DIM)
        self.value = nn.Linear(DIM, DIM)


class BertOut(nn.Module):
    def __init__(self, d_in):
        super().__init__()
        self.dense = nn.Linear(d_in, DIM)
        self.LayerNorm = nn.LayerNorm(DIM)


class BertAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.self = BertSelf()
        self.output = BertOut(DIM)


class BertInter(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(DIM, 4 * DIM)


class BertLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = BertAttention()
        self.intermediate = BertInter()
        self.output = BertOut(4 * DIM)


def attend(q, k, v):
    return F.softmax(q @ k.transpose(-1, -2) * 0.25, -1) @ v


class PostNormSource(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, DIM)
        self.layer = nn.ModuleList([BertLayer() for _ in range(LAYERS)])
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-0.5, 0.5)


class PostNormAttn(nn.Module):
    def __init__(self, src: BertAttention):
        super().__init__()
        self.q, self.k, self.v = src.self.query, src.self.key, src.self.value
        self.proj = src.output.dense

    def forward(self, x):
        return self.proj(attend(self.q(x), self.k(x), self.v(x)))


class PostNormMlp(nn.Module):
    def __init__(self, src: BertLayer):
        super().__init__()
        self.fc1, self.fc2 = src.intermediate.dense, src.output.dense

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class PostNormBlock(nn.Module):
    def __init__(self, src: BertLayer):
        super().__init__()
        self.norm1 = src.attention.output.LayerNorm
        self.norm2 = src.output.LayerNorm
        self.attn = PostNormAttn(src.attention)
        self.mlp = PostNormMlp(src)

    def forward(self, x):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class PostNormTarget(nn.Module):
    def __init__(self, src: PostNormSource):
        super().__init__()
        self.patch = src.embed
        self.blocks = nn.Sequential(*[PostNormBlock(layer) for layer in src.layer])

    def forward(self, x):
        return self.blocks(self.patch(x))


def post_norm_reference(src: PostNormSource, x):
    x = src.embed(x)
    for layer in src.layer:
        a = layer.attention
        h = a.output.dense(attend(a.self.query(x), a.self.key(x), a.self.value(x)))
        x = a.output.LayerNorm(x + h)
        h = layer.output.dense(F.gelu(layer.intermediate.dense(x)))
        x = layer.output.LayerNorm(x + h)
    return x


# ---------------------------------------------------------------- pre_norm
class RmsNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(DIM) + 0.5)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class SelfAttn(nn.Module):
    def __init__(self):
        super().__init__()
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, n, nn.Linear(DIM, DIM, bias=False))


class GatedMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(DIM, 3 * DIM, bias=False)
        self.up_proj = nn.Linear(DIM, 3 * DIM, bias=False)
        self.down_proj = nn.Linear(3 * DIM, DIM, bias=False)


class DecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = SelfAttn()
        self.mlp = GatedMlp()
        self.input_layernorm = RmsNorm()
        self.post_attention_layernorm = RmsNorm()


class PreNormSource(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer() for _ in range(LAYERS)])
        self.norm = RmsNorm()


class InferAttn(nn.Module):
    def __init__(self, src: SelfAttn):
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = src.q_proj, src.k_proj, src.v_proj, src.o_proj

    def forward(self, x):
        return self.wo(attend(self.wq(x), self.wk(x), self.wv(x)))


class InferFfn(nn.Module):
    def __init__(self, src: GatedMlp):
        super().__init__()
        self.w1, self.w2, self.w3 = src.gate_proj, src.down_proj, src.up_proj

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class InferBlock(nn.Module):
    def __init__(self, src: DecoderLayer):
        super().__init__()
        self.attn = InferAttn(src.self_attn)
        self.ffn = InferFfn(src.mlp)
        self.attn_norm = src.input_layernorm
        self.ffn_norm = src.post_attention_layernorm

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class PreNormTarget(nn.Module):
    def __init__(self, src: PreNormSource):
        super().__init__()
        self.blocks = nn.Sequential(*[InferBlock(layer) for layer in src.layers])
        self.norm = src.norm

    def forward(self, x):
        return self.norm(self.blocks(x))


def pre_norm_reference(src: PreNormSource, x):
    for layer in src.layers:
        a = layer.self_attn
        h = layer.input_layernorm(x)
        x = x + a.o_proj(attend(a.q_proj(h), a.k_proj(h), a.v_proj(h)))
        h = layer.post_attention_layernorm(x)
        m = layer.mlp
        x = x + m.down_proj(F.silu(m.gate_proj(h)) * m.up_proj(h))
    return src.norm(x)


# ---------------------------------------------------------------- repeated_rule
RULE_IN, RULE_WIDTH, RULE_LAYERS = 4, 8, 4


class RuleLayer(nn.Module):
    def __init__(self, d_in):
        super().__init__()
        self.inp = nn.Linear(d_in, RULE_WIDTH)
        self.out = nn.Linear(RULE_WIDTH, RULE_WIDTH)

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x)))


class RuleSource(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            [RuleLayer(RULE_IN if i == 0 else RULE_WIDTH) for i in range(RULE_LAYERS)]
        )

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class RuleBlock(nn.Module):
    def __init__(self, src: RuleLayer):
        super().__init__()
        # Registered in the other order than they run; names share nothing with the source's.
        self.beta = src.out
        self.alpha = src.inp

    def forward(self, x):
        return self.beta(torch.tanh(self.alpha(x)))


class RuleTarget(nn.Module):
    def __init__(self, src: RuleSource):
        super().__init__()
        self.blocks = nn.Sequential(*[RuleBlock(layer) for layer in src.layers])

    def forward(self, x):
        return self.blocks(x)


# ---------------------------------------------------------------- writing
def truth_of(source: nn.Module, target: nn.Module):
    """{source name: target name} by tensor identity (the target holds the source's tensors)."""
    by_id = {}
    for name, t in target.state_dict(keep_vars=True).items():
        by_id[id(t)] = name
    truth = {}
    for name, t in source.state_dict(keep_vars=True).items():
        if id(t) in by_id:
            truth[name] = by_id[id(t)]
    assert len(truth) == len(source.state_dict()) == len(target.state_dict()), (
        len(truth),
        len(source.state_dict()),
        len(target.state_dict()),
    )
    return truth


def write_case(name, source, target, x, reference):
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    source.eval()
    target.eval()
    with torch.no_grad():
        want = reference(x)
        got = target(x)
    assert torch.allclose(want, got, atol=1e-5), f"{name}: the target must compute what the source does"
    truth = truth_of(source, target)
    state = {k: v.detach().clone().contiguous() for k, v in source.state_dict().items()}
    torch.save(state, out / "source.pth")
    save_file(state, str(out / "source.safetensors"))
    torch.jit.script(target).save(str(out / "target.pt"))
    torch.save({"inputs": [x], "reference_output": want}, out / "io.pt")
    case = {"input_shape": list(x.shape), "ground_truth": truth}
    (out / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    print(f"wrote models/lookalikes/{name}: {len(truth)} tensors")


def main():
    torch.manual_seed(0)
    src = ShortcutSource()
    write_case("shortcut", src, ShortcutTarget(src), torch.randn(2, 3, 8, 8), src)

    src = MovedSource()
    write_case("moved_block", src, MovedTarget(src), torch.randn(2, 3, 16, 16), src)

    src = PostNormSource()
    write_case(
        "post_norm",
        src,
        PostNormTarget(src),
        torch.randn(2, 4, 8),
        lambda x: post_norm_reference(src, x),
    )

    src = RuleSource()
    write_case("repeated_rule", src, RuleTarget(src), torch.randn(2, RULE_IN), src)

    src = PreNormSource()
    write_case(
        "pre_norm",
        src,
        PreNormTarget(src),
        torch.randn(2, 4, DIM),
        lambda x: pre_norm_reference(src, x),
    )


if __name__ == "__main__":
    main()
