#!/usr/bin/env python3
"""Writes the scale cases: DeepSeek-V3- and Qwen3-235B-A22B-shaped models, header only.

    python3 scripts/make_scale_cases.py [OUT_DIR] [--cases NAME,...] [--hidden-divisor N]

OUT_DIR defaults to bench-out/scale/ (git-ignored). Standard library only, deterministic,
a few seconds for all cases. Each case is a folder:

  source.safetensors            HF naming, one file
  source_sharded/               HF naming, model-000NN-of-000MM.safetensors + model.safetensors.index.json
  target.json                   the same network under another naming, as a model spec JSON
                                (registration order, parameters and a non-persistent buffer)
  target.safetensors            the target's tensors as header-only safetensors (no order signal)
  target_sharded/               the same, split into ~5 GB shards with an index
  target.order.json             the target's execution order, as `weightmap trace -o` writes it
                                (a trace of the real target; norms run before their modules)
  case.json                     ground truth by construction, in the corpus's case.json layout
                                (ground_truth, target_only_keys, unmapped_source_keys, transforms)

The safetensors files are header only: the 8-byte length, the JSON header with each
tensor's dtype, shape and data_offsets, then the file extended sparsely (truncate) to
the size the header declares. No tensor data exists on disk, so a reader that touched
the data would read zeros from a 700 GB hole and crawl; one that reads the header only
is instant. Headers are sorted by name, as Hugging Face writes them, so the source's key
order carries no signal (the index's weight_map is sorted too).

Families (real counts, checked at generation time):
  deepseek_v3  91,991 tensors: 61 layers (3 dense, 58 MoE with 256 routed experts, one
               shared expert, a router with e_score_correction_bias), MLA attention, FP8
               weights each with a weight_scale_inv, plus the multi-token-prediction layer
               61 (embed_tokens, enorm, hnorm, eh_proj, shared_head.norm/head, and a full
               MoE block), embed_tokens, norm, lm_head.
               Target: DeepSeek's reference inference naming (inference/convert.py):
               embed, layers.N.attn.wq_a / q_norm / wq_b / wkv_a / kv_norm / wkv_b / wo,
               attn_norm, ffn_norm, ffn.w1/w2/w3, ffn.experts.E.w1/w2/w3,
               ffn.shared_experts.w*, ffn.gate.weight/bias, weight_scale_inv -> scale,
               norm, head; the MTP layer keeps index 61.
  qwen3_moe    36,945 tensors: 94 layers x (128 experts x 3 + q/k/v/o + q_norm/k_norm +
               2 layernorms + router) + embed_tokens + norm + lm_head.
               Target: Meta / mistral-src naming: tok_embeddings, layers.N.attention.wq/wk/
               wv/wo, attention.q_norm/k_norm, attention_norm, ffn_norm, feed_forward.gate,
               feed_forward.experts.E.w1/w2/w3, norm, output.
  deepseek_v3_nomtp  the same source; the target drops the MTP layer as DeepSeek's conversion
               does, so its 1,564 source tensors are listed in case.json's
               unmapped_source_keys and must stay unmapped.
Targets list modules in registration order (attention, feed-forward with the router after
the experts, then the two norms), which differs from the source's alphabetical order, and
add one non-persistent buffer (rotary `freqs_cis`) that has no source.
Smaller members of each family (fewer layers and experts, same shapes) give the growth curve.
"""
import argparse
import json
import math
import os
import sys

# Bytes per element of each safetensors dtype used here.
DTYPE_BYTES = {"F8_E4M3": 1, "BF16": 2, "F32": 4, "C64": 8}
# safetensors dtype -> torch dtype name (what the model spec JSON uses).
TORCH_DTYPE = {"F8_E4M3": "float8_e4m3fn", "BF16": "bfloat16", "F32": "float32", "C64": "complex64"}
# FP8 block size of DeepSeek-V3's weight_scale_inv (one scale per 128x128 block).
FP8_BLOCK = 128
# Target shard size of the sharded source, as Hugging Face's default (about 5 GB).
SHARD_BYTES = 5 * 10**9
# Safetensors pads the JSON header with spaces to a multiple of this.
HEADER_ALIGN = 8


class Net:
    """A network as a list of (source name, target name, shape, dtype, target registration
    order key, target execution order key)."""

    def __init__(self):
        self.rows = []

    def add(self, src, tgt, shape, dtype, order, exec_key=None):
        """exec_key: where forward first uses the tensor, when not where it is registered."""
        self.rows.append((src, tgt, [int(d) for d in shape], dtype, order, order if exec_key is None else exec_key))


def fp8_linear(net, src, tgt, out_f, in_f, order, scale_leaf, exec_key=None):
    """An FP8 linear layer: the weight and its block scale (float32, one per 128x128 block)."""
    e = order if exec_key is None else exec_key
    net.add(src + ".weight", tgt + ".weight", [out_f, in_f], "F8_E4M3", order + (0,), e + (0,))
    scale = [math.ceil(out_f / FP8_BLOCK), math.ceil(in_f / FP8_BLOCK)]
    net.add(src + ".weight_scale_inv", tgt + "." + scale_leaf, scale, "F32", order + (1,), e + (1,))


def deepseek_v3(layers=61, dense=3, experts=256, div=1, scale_leaf="scale", mtp=True):
    """DeepSeek-V3 (config.json of deepseek-ai/DeepSeek-V3), hidden sizes divided by `div`."""
    h = 7168 // div
    vocab = 129280 // div
    q_lora, kv_lora, rope, nope, v_dim = 1536 // div, 512 // div, 64 // div, 128 // div, 128 // div
    heads = 128
    inter, moe_inter = 18432 // div, 2048 // div
    net = Net()
    net.add("model.embed_tokens.weight", "embed.weight", [vocab, h], "BF16", (0,))

    def block(i, hf, tg, moe, base):
        # Target registration order in DeepSeek's model.py: attn_norm, attn, ffn_norm, ffn;
        # the norms are listed last here (the order differs from the source on purpose).
        a, f = base + (1,), base + (2,)
        fp8_linear(net, f"{hf}.self_attn.q_a_proj", f"{tg}.attn.wq_a", q_lora, h, a + (0,), scale_leaf)
        net.add(f"{hf}.self_attn.q_a_layernorm.weight", f"{tg}.attn.q_norm.weight", [q_lora], "BF16", a + (1,))
        fp8_linear(net, f"{hf}.self_attn.q_b_proj", f"{tg}.attn.wq_b", heads * (nope + rope), q_lora, a + (2,), scale_leaf)
        fp8_linear(net, f"{hf}.self_attn.kv_a_proj_with_mqa", f"{tg}.attn.wkv_a", kv_lora + rope, h, a + (3,), scale_leaf)
        net.add(f"{hf}.self_attn.kv_a_layernorm.weight", f"{tg}.attn.kv_norm.weight", [kv_lora], "BF16", a + (4,))
        fp8_linear(net, f"{hf}.self_attn.kv_b_proj", f"{tg}.attn.wkv_b", heads * (nope + v_dim), kv_lora, a + (5,), scale_leaf)
        fp8_linear(net, f"{hf}.self_attn.o_proj", f"{tg}.attn.wo", h, heads * v_dim, a + (6,), scale_leaf)
        if not moe:
            fp8_linear(net, f"{hf}.mlp.gate_proj", f"{tg}.ffn.w1", inter, h, f + (0,), scale_leaf)
            fp8_linear(net, f"{hf}.mlp.down_proj", f"{tg}.ffn.w2", h, inter, f + (1,), scale_leaf, f + (3,))
            fp8_linear(net, f"{hf}.mlp.up_proj", f"{tg}.ffn.w3", inter, h, f + (2,), scale_leaf)
        else:
            for e in range(experts):
                ex = f + (0, e)
                fp8_linear(net, f"{hf}.mlp.experts.{e}.gate_proj", f"{tg}.ffn.experts.{e}.w1", moe_inter, h, ex + (0,), scale_leaf)
                fp8_linear(net, f"{hf}.mlp.experts.{e}.down_proj", f"{tg}.ffn.experts.{e}.w2", h, moe_inter, ex + (1,), scale_leaf, ex + (3,))
                fp8_linear(net, f"{hf}.mlp.experts.{e}.up_proj", f"{tg}.ffn.experts.{e}.w3", moe_inter, h, ex + (2,), scale_leaf)
            sh = f + (1,)
            fp8_linear(net, f"{hf}.mlp.shared_experts.gate_proj", f"{tg}.ffn.shared_experts.w1", moe_inter, h, sh + (0,), scale_leaf)
            fp8_linear(net, f"{hf}.mlp.shared_experts.down_proj", f"{tg}.ffn.shared_experts.w2", h, moe_inter, sh + (1,), scale_leaf, sh + (3,))
            fp8_linear(net, f"{hf}.mlp.shared_experts.up_proj", f"{tg}.ffn.shared_experts.w3", moe_inter, h, sh + (2,), scale_leaf)
            # The router is registered after the experts in the target, and runs before them.
            net.add(f"{hf}.mlp.gate.weight", f"{tg}.ffn.gate.weight", [experts, h], "BF16", f + (2, 0), f + (-1, 0))
            net.add(f"{hf}.mlp.gate.e_score_correction_bias", f"{tg}.ffn.gate.bias", [experts], "F32", f + (2, 1), f + (-1, 1))
        # Pre-norm: each norm runs just before its module.
        net.add(f"{hf}.input_layernorm.weight", f"{tg}.attn_norm.weight", [h], "BF16", base + (3,), base + (0.5,))
        net.add(f"{hf}.post_attention_layernorm.weight", f"{tg}.ffn_norm.weight", [h], "BF16", base + (4,), base + (1.5,))

    for i in range(layers):
        block(i, f"model.layers.{i}", f"layers.{i}", i >= dense, (1, i))
    if mtp:
        # The multi-token-prediction module: one more decoder block with its own embedding,
        # two input norms, a projection of the concatenated hidden states and a head.
        i = layers
        hf, tg, base = f"model.layers.{i}", f"layers.{i}", (1, i)
        net.add(f"{hf}.embed_tokens.weight", f"{tg}.embed.weight", [vocab, h], "BF16", base + (0, 0))
        net.add(f"{hf}.enorm.weight", f"{tg}.enorm.weight", [h], "BF16", base + (0, 1))
        net.add(f"{hf}.hnorm.weight", f"{tg}.hnorm.weight", [h], "BF16", base + (0, 2))
        net.add(f"{hf}.eh_proj.weight", f"{tg}.eh_proj.weight", [h, 2 * h], "BF16", base + (0, 3))
        block(i, hf, tg, True, base)
        net.add(f"{hf}.shared_head.norm.weight", f"{tg}.head_norm.weight", [h], "BF16", base + (5, 0))
        net.add(f"{hf}.shared_head.head.weight", f"{tg}.head.weight", [vocab, h], "BF16", base + (5, 1))
    net.add("model.norm.weight", "norm.weight", [h], "BF16", (2,))
    net.add("lm_head.weight", "head.weight", [vocab, h], "BF16", (3,))
    # Rotary frequencies: a non-persistent buffer of the target with no source.
    extra = [("freqs_cis", [4096 * 4, rope // 2], "C64", (0, 1))]
    return net, extra


def qwen3_moe(layers=94, experts=128, div=1):
    """Qwen3-235B-A22B (config.json of Qwen/Qwen3-235B-A22B), hidden sizes divided by `div`."""
    h, vocab, head_dim = 4096 // div, 151936 // div, 128 // div
    q_heads, kv_heads, moe_inter = 64, 4, 1536 // div
    net = Net()
    net.add("model.embed_tokens.weight", "tok_embeddings.weight", [vocab, h], "BF16", (0,))
    for i in range(layers):
        hf, tg, a, f = f"model.layers.{i}", f"layers.{i}", (1, i, 0), (1, i, 1)
        net.add(f"{hf}.self_attn.q_proj.weight", f"{tg}.attention.wq.weight", [q_heads * head_dim, h], "BF16", a + (0,))
        net.add(f"{hf}.self_attn.k_proj.weight", f"{tg}.attention.wk.weight", [kv_heads * head_dim, h], "BF16", a + (1,))
        net.add(f"{hf}.self_attn.v_proj.weight", f"{tg}.attention.wv.weight", [kv_heads * head_dim, h], "BF16", a + (2,))
        net.add(f"{hf}.self_attn.o_proj.weight", f"{tg}.attention.wo.weight", [h, q_heads * head_dim], "BF16", a + (3,))
        net.add(f"{hf}.self_attn.q_norm.weight", f"{tg}.attention.q_norm.weight", [head_dim], "BF16", a + (4,))
        net.add(f"{hf}.self_attn.k_norm.weight", f"{tg}.attention.k_norm.weight", [head_dim], "BF16", a + (5,))
        for e in range(experts):
            ex = f + (0, e)
            net.add(f"{hf}.mlp.experts.{e}.gate_proj.weight", f"{tg}.feed_forward.experts.{e}.w1.weight", [moe_inter, h], "BF16", ex + (0,))
            net.add(f"{hf}.mlp.experts.{e}.down_proj.weight", f"{tg}.feed_forward.experts.{e}.w2.weight", [h, moe_inter], "BF16", ex + (1,), ex + (3,))
            net.add(f"{hf}.mlp.experts.{e}.up_proj.weight", f"{tg}.feed_forward.experts.{e}.w3.weight", [moe_inter, h], "BF16", ex + (2,))
        net.add(f"{hf}.mlp.gate.weight", f"{tg}.feed_forward.gate.weight", [experts, h], "BF16", f + (1,), f + (-0.5,))
        net.add(f"{hf}.input_layernorm.weight", f"{tg}.attention_norm.weight", [h], "BF16", (1, i, 2), a + (-1,))
        net.add(f"{hf}.post_attention_layernorm.weight", f"{tg}.ffn_norm.weight", [h], "BF16", (1, i, 3), f + (-1,))
    net.add("model.norm.weight", "norm.weight", [h], "BF16", (2,))
    net.add("lm_head.weight", "output.weight", [vocab, h], "BF16", (3,))
    extra = [("freqs_cis", [40960 * 2, head_dim // 2], "C64", (0, 1))]
    return net, extra


# name -> (family, expected tensor count or None, builder kwargs, real shard count or None)
CASES = {
    "deepseek_v3_1k": ("deepseek_v3", None, dict(layers=5, dense=1, experts=32), None),
    "deepseek_v3_5k": ("deepseek_v3", None, dict(layers=14, dense=3, experts=64), None),
    "deepseek_v3_92k": ("deepseek_v3", 91991, dict(layers=61, dense=3, experts=256), 163),
    # DeepSeek's own conversion (inference/convert.py) drops the multi-token-prediction
    # layer: its 1,564 source tensors (at full size) have no counterpart in the target.
    "deepseek_v3_nomtp_1k": ("deepseek_v3", None, dict(layers=5, dense=1, experts=32, drop_mtp=True), None),
    "deepseek_v3_nomtp_5k": ("deepseek_v3", None, dict(layers=14, dense=3, experts=64, drop_mtp=True), None),
    "deepseek_v3_nomtp_92k": ("deepseek_v3", 91991, dict(layers=61, dense=3, experts=256, drop_mtp=True), 163),
    "qwen3_moe_1k": ("qwen3_moe", None, dict(layers=18, experts=16), None),
    "qwen3_moe_5k": ("qwen3_moe", None, dict(layers=48, experts=32), None),
    "qwen3_moe_37k": ("qwen3_moe", 36945, dict(layers=94, experts=128), 118),
}


def write_safetensors(path, entries):
    """Writes a header-only safetensors file: entries [(name, dtype, shape)] in header order,
    data offsets laid out in that order, the data section a sparse hole."""
    header, offset = {}, 0
    for name, dtype, shape in entries:
        n = DTYPE_BYTES[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % HEADER_ALIGN)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.truncate(8 + len(text) + offset)
    os.replace(tmp, path)
    return offset


def write_sharded(folder, groups, total):
    """Writes shards `model-0000K-of-0000M.safetensors` of rows (name, _, shape, dtype),
    each header sorted by name, and the index whose weight_map is sorted too."""
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    weight_map = {}
    for k, g in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(os.path.join(folder, fname), [(r[0], r[3], r[2]) for r in sorted(g, key=lambda r: r[0])])
        for r in g:
            weight_map[r[0]] = fname
    write_json(os.path.join(folder, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def op_of(name, shape):
    """The op a trace would record as first taking the tensor."""
    if "embed" in name:
        return "aten::embedding"
    if len(shape) == 1:
        return "aten::mul"
    return "aten::linear"


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def make_case(out, name, div, scale_leaf):
    family, expected, kwargs, real_shards = CASES[name]
    kwargs = dict(kwargs)
    drop_mtp = kwargs.pop("drop_mtp", False)
    if family == "deepseek_v3":
        net, extra = deepseek_v3(div=div, scale_leaf=scale_leaf, **kwargs)
    else:
        net, extra = qwen3_moe(div=div, **kwargs)
    rows = net.rows
    if expected is not None and len(rows) != expected:
        sys.exit(f"{name}: built {len(rows)} tensors but the real model has {expected}")
    names = [r[0] for r in rows]
    if len(set(names)) != len(names) or len({r[1] for r in rows}) != len(rows):
        sys.exit(f"{name}: duplicate names")
    # Source tensors the target drops (the MTP layer, index `layers`): source only.
    mtp = f"model.layers.{kwargs.get('layers')}."
    dropped = [r for r in rows if drop_mtp and r[0].startswith(mtp)]
    kept = [r for r in rows if not (drop_mtp and r[0].startswith(mtp))]
    d = os.path.join(out, name)
    os.makedirs(os.path.join(d, "source_sharded"), exist_ok=True)
    os.makedirs(os.path.join(d, "target_sharded"), exist_ok=True)

    # Source, one file: header sorted by name, as Hugging Face writes it.
    src_sorted = sorted(rows, key=lambda r: r[0])
    total = write_safetensors(os.path.join(d, "source.safetensors"), [(r[0], r[3], r[2]) for r in src_sorted])

    # Source, sharded: shards filled in model order (as save_pretrained does), each shard's
    # header and the index's weight_map sorted by name.
    shards = real_shards or max(1, math.ceil(total / SHARD_BYTES))
    per = total / shards
    groups, acc = [[] for _ in range(shards)], 0
    for r in rows:
        groups[min(int(acc / per), shards - 1)].append(r)
        acc += DTYPE_BYTES[r[3]] * math.prod(r[2])
    write_sharded(os.path.join(d, "source_sharded"), groups, total)

    # Target: registration order; the rotary buffer first-level, non-persistent.
    tgt = [(r[4], r[1], r[2], r[3], "parameter", True) for r in kept]
    tgt += [(o, n, s, dt, "buffer", False) for n, s, dt, o in extra]
    tgt.sort(key=lambda t: t[0])
    spec = {"tensors": [
        {"name": n, "shape": s, "dtype": TORCH_DTYPE[dt], "kind": k, **({} if p else {"persistent": False})}
        for _, n, s, dt, k, p in tgt]}
    write_json(os.path.join(d, "target.json"), spec)
    # The target's execution order as `weightmap trace TARGET -o FILE` writes it: what a
    # trace of the real target model records (norms before their modules, the router
    # before its experts; the rotary buffer right after the embedding).
    executed = sorted([(r[5], r[1], r[2]) for r in kept] + [(o, n, s) for n, s, _, o in extra])
    write_json(os.path.join(d, "target.order.json"), {
        "mode": "dynamic",
        "device": "cpu",
        "order": [{"index": i, "name": n, "op": op_of(n, s), "shape": s} for i, (_, n, s) in enumerate(executed)],
        "untouched": [],
        "also_used": [],
    })
    persistent = sorted((t for t in tgt if t[5]), key=lambda t: t[1])
    target_total = write_safetensors(os.path.join(d, "target.safetensors"), [(t[1], t[3], t[2]) for t in persistent])
    # Target, sharded: the state dict in registration order split into ~5 GB shards.
    tshards = max(1, math.ceil(target_total / SHARD_BYTES))
    groups, acc = [[] for _ in range(tshards)], 0
    for t in (t for t in tgt if t[5]):
        groups[min(int(acc / (target_total / tshards)), tshards - 1)].append((t[1], None, t[2], t[3]))
        acc += DTYPE_BYTES[t[3]] * math.prod(t[2])
    write_sharded(os.path.join(d, "target_sharded"), groups, target_total)

    write_json(os.path.join(d, "case.json"), {
        "name": name,
        "description": f"{family}-shaped, header-only safetensors (HF naming) -> target naming; "
                       f"hidden sizes divided by {div}; generated by scripts/make_scale_cases.py",
        "family": family,
        "counts": {"source": len(rows), "target": len(tgt), "shards": shards, "declared_bytes": total},
        "ground_truth": {r[0]: r[1] for r in kept},
        "transforms": [],
        "unmapped_source_keys": [r[0] for r in dropped],
        "target_only_keys": [n for n, _, _, _ in extra],
    })
    return len(rows), shards, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="bench-out/scale", help="output folder (default bench-out/scale)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names: " + ", ".join(CASES))
    ap.add_argument("--hidden-divisor", type=int, default=1,
                    help="divide hidden sizes by this (tensor counts unchanged; default 1: real shapes)")
    ap.add_argument("--scale-leaf", default="scale", choices=["scale", "weight_scale_inv"],
                    help="target leaf name of DeepSeek's FP8 block scales (reference code: scale)")
    args = ap.parse_args()
    for name in args.cases.split(","):
        if name not in CASES:
            sys.exit(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        n, shards, total = make_case(args.out, name, args.hidden_divisor, args.scale_leaf)
        print(f"{name}: {n} tensors, {shards} shards, {total / 1e9:.1f} GB declared (sparse) -> {os.path.join(args.out, name)}")


if __name__ == "__main__":
    main()
