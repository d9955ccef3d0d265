#!/usr/bin/env python3
"""Writes weightmap's small reader fixtures into models/ and what PyTorch itself
reports about each into models/expected.json.

Run with the project's Python (torch 2.11.0): `.venv/bin/python scripts/make_fixtures.py`.
Deterministic (fixed seeds), every file small (< 200 KB). scripts/setup.sh runs it
only when models/expected.json is missing; the outputs are committed.

Good fixtures (expected.json "fixtures"): keys in file order, shapes, dtypes, the state
dict chosen, its alternatives, the wrapper prefixes weightmap should strip, tied keys.
Bad fixtures (models/bad/, expected.json "bad"): each must be refused with a clear error.
"""

import argparse
import collections
import datetime
import json
import pathlib
import random
import struct
import sys
import zipfile

import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
BAD = MODELS / "bad"

# Names torch uses for dtypes, as weightmap reports them.
DTYPE_NAMES = {v: str(v).removeprefix("torch.") for v in vars(torch).values() if isinstance(v, torch.dtype)}


# --- The demo pair: one small CNN and the same network refactored -------------------

class DemoSource(nn.Module):
    """A ResNet-ish CNN with BatchNorm, the way a training repo would write it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 16, 1), Block(16, 16, 1))
        self.layer2 = nn.Sequential(Block(16, 24, 2))
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean((2, 3)))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ConvNorm(nn.Module):
    """The refactor's conv + norm unit; registers the norm first (registration order
    differs from execution order)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.norm = nn.BatchNorm2d(cout)
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


class Stage(nn.Module):
    def __init__(self, specs):
        super().__init__()
        self.units = nn.ModuleList()
        for cin, cout, stride in specs:
            self.units.append(nn.Sequential(ConvNorm(cin, cout, stride), ConvNorm(cout, cout)))

    def forward(self, x):
        for u in self.units:
            x = u(x)
        return x


class DemoTarget(nn.Module):
    """DemoSource refactored: renamed modules (stem/stages/head), deeper nesting, the
    head registered before the stages."""

    def __init__(self):
        super().__init__()
        self.stem = ConvNorm(3, 8)
        self.head = nn.ModuleDict({"classifier": nn.Linear(24, 10)})
        self.stages = nn.ModuleList([Stage([(8, 16, 1), (16, 16, 1)]), Stage([(16, 24, 2)])])

    def forward(self, x):
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        return self.head["classifier"](x.mean((2, 3)))


def demo_truth():
    """Source key -> target key for the demo pair."""
    truth = {}

    def conv_norm(src_conv, src_bn, dst):
        truth[f"{src_conv}.weight"] = f"{dst}.conv.weight"
        for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            truth[f"{src_bn}.{leaf}"] = f"{dst}.norm.{leaf}"

    conv_norm("conv1", "bn1", "stem")
    for s_layer, t_stage, blocks in (("layer1", 0, 2), ("layer2", 1, 1)):
        for b in range(blocks):
            conv_norm(f"{s_layer}.{b}.conv1", f"{s_layer}.{b}.bn1", f"stages.{t_stage}.units.{b}.0")
            conv_norm(f"{s_layer}.{b}.conv2", f"{s_layer}.{b}.bn2", f"stages.{t_stage}.units.{b}.1")
    truth["fc.weight"] = "head.classifier.weight"
    truth["fc.bias"] = "head.classifier.bias"
    return truth


def randomize_bn(model):
    """Non-trivial running statistics, so that a wrong mapping shows in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)


# --- Other models ---------------------------------------------------------------------

class Mlp(nn.Module):
    def __init__(self, d=12, h=24, out=4):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.norm = nn.LayerNorm(h)
        self.fc2 = nn.Linear(h, out)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


class TinyLM(nn.Module):
    """Embedding and LM head share one weight (tied)."""

    def __init__(self, vocab=40, d=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.block = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        return self.lm_head(torch.tanh(self.block(self.embed(ids))))


class Scripted(nn.Module):
    """Has control flow, so it is compiled with torch.jit.script."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.gate = nn.Linear(6, 1)
        self.register_buffer("scale", torch.tensor(0.5))
        self.register_buffer("cache", torch.zeros(2), persistent=False)

    def forward(self, x):
        if float(self.gate(x).mean()) > 0:
            return self.proj(x) * self.scale
        return x


# --- Reading back what PyTorch reports --------------------------------------------------

def describe_state_dict(sd):
    """Tensors of a state dict in order, with tied_to (earlier key with the same storage
    view), as weightmap should report them; non-tensor entries are listed as skipped."""
    tensors, skipped, seen = [], [], {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            skipped.append(k)
            continue
        view = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        tied = seen.get(view) if v.numel() > 0 else None
        seen.setdefault(view, k)
        tensors.append({"name": k, "shape": list(v.shape), "dtype": DTYPE_NAMES[v.dtype], "tied_to": tied,
                        "offset": v.storage_offset(), "stride": list(v.stride())})
    return tensors, skipped


def expect_torch_save(path, key_path, alternatives, stripped):
    obj = torch.load(path, map_location="cpu", weights_only=False)
    sd = obj
    for k in key_path:
        sd = sd[k]
    tensors, skipped = describe_state_dict(sd)
    return {
        "format": "torch_zip",
        "state_dict_key": ".".join(key_path) or None,
        "alternatives": alternatives,
        "stripped_prefixes": stripped,
        "tensors": tensors,
        "skipped": skipped,
    }


def expect_torchscript(path, stripped=()):
    m = torch.jit.load(path, map_location="cpu")
    params = {n for n, _ in m.named_parameters()}
    tensors, _ = describe_state_dict(m.state_dict())
    for t in tensors:
        t["kind"] = "parameter" if t["name"] in params else "buffer"
    return {"format": "torchscript", "state_dict_key": None, "alternatives": [], "stripped_prefixes": list(stripped),
            "tensors": tensors, "skipped": []}


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n), object_pairs_hook=collections.OrderedDict)


def expect_safetensors(path):
    from safetensors import safe_open
    header = safetensors_header(path)
    tensors = []
    with safe_open(path, "pt") as f:
        for k in header:
            if k == "__metadata__":
                continue
            t = f.get_slice(k)
            tensors.append({"name": k, "shape": list(t.get_shape()), "dtype": DTYPE_NAMES[f.get_tensor(k).dtype], "tied_to": None})
    return {"format": "safetensors", "state_dict_key": None, "alternatives": [], "stripped_prefixes": [], "tensors": tensors, "skipped": []}


def expect_sharded(index_path):
    from safetensors import safe_open
    index = json.loads(pathlib.Path(index_path).read_text(), object_pairs_hook=collections.OrderedDict)
    tensors = []
    for k, shard in index["weight_map"].items():
        with safe_open(pathlib.Path(index_path).parent / shard, "pt") as f:
            t = f.get_tensor(k)
        tensors.append({"name": k, "shape": list(t.shape), "dtype": DTYPE_NAMES[t.dtype], "tied_to": None})
    return {"format": "safetensors_sharded", "state_dict_key": None, "alternatives": [], "stripped_prefixes": [], "tensors": tensors, "skipped": []}


# --- Bad inputs --------------------------------------------------------------------------

def writestr(z, name, data, compress=zipfile.ZIP_STORED):
    """zipfile.writestr with a fixed timestamp, so that reruns write identical bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compress
    z.writestr(info, data)


def torch_zip_with_pickle(path, pkl, records=(), compress=zipfile.ZIP_DEFLATED):
    """A zip laid out like torch.save's, with a hand-made data.pkl (deflated so that
    repetitive bombs stay small on disk)."""
    with zipfile.ZipFile(path, "w") as z:
        writestr(z, "archive/data.pkl", pkl, compress)
        writestr(z, "archive/byteorder", "little", compress)
        for name, data in records:
            writestr(z, f"archive/data/{name}", data, compress)
        writestr(z, "archive/version", "3\n", compress)


def rewrite_zip(src, dst, drop=(), replace=None):
    """Copies a torch.save zip, dropping or replacing entries (stored, as torch writes)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if any(info.filename.endswith(d) for d in drop):
                continue
            data = replace.get(info.filename.split("/", 1)[1], zin.read(info.filename))
            writestr(zout, info.filename, data)


def make_bad(good_pth, good_st):
    BAD.mkdir(parents=True, exist_ok=True)
    bad = {}
    raw = good_pth.read_bytes()

    (BAD / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    bad["truncated.pth"] = "zip cut in half: no central directory"

    # Flip the bytes of the first central-directory header (signature and fields).
    cd = raw.rfind(b"PK\x05\x06")
    cd_start = struct.unpack("<I", raw[cd + 16: cd + 20])[0]
    corrupt = bytearray(raw)
    for i in range(cd_start, cd_start + 46):
        corrupt[i] ^= 0x5A
    (BAD / "corrupt_cd.pth").write_bytes(bytes(corrupt))
    bad["corrupt_cd.pth"] = "central directory bytes flipped"

    (BAD / "random.bin").write_bytes(random.Random(0).randbytes(4096))
    bad["random.bin"] = "random bytes"
    (BAD / "empty.pth").write_bytes(b"")
    bad["empty.pth"] = "empty file"

    # A million nested MARK + EMPTY_LIST: a recursion bomb for recursive unpicklers.
    torch_zip_with_pickle(BAD / "deep_recursion.pth", b"\x80\x02" + b"(]" * 1_000_000 + b".")
    bad["deep_recursion.pth"] = "1e6 nested MARK/EMPTY_LIST in data.pkl"
    # Twenty million MEMOIZE opcodes: a memo table far beyond any real checkpoint's.
    torch_zip_with_pickle(BAD / "memo_bomb.pth", b"\x80\x04N" + b"\x94" * 20_000_000 + b".")
    bad["memo_bomb.pth"] = "2e7 MEMOIZE opcodes in data.pkl"
    # BINUNICODE8 declaring 2^62 bytes.
    torch_zip_with_pickle(BAD / "huge_length.pth", b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"x.")
    bad["huge_length.pth"] = "data.pkl declares a 2^62-byte string"

    # A storage record missing, and one too short for its tensor.
    rewrite_zip(good_pth, BAD / "missing_record.pth", drop=("/data/0",))
    bad["missing_record.pth"] = "storage record data/0 removed"
    rewrite_zip(good_pth, BAD / "short_record.pth", replace={"data/0": b"\0" * 8})
    bad["short_record.pth"] = "storage record data/0 shortened to 8 bytes"
    with zipfile.ZipFile(BAD / "no_data_pkl.zip", "w") as z:
        writestr(z, "notes/readme.txt", "not a checkpoint")
    bad["no_data_pkl.zip"] = "a zip without data.pkl"
    torch.save({"w": torch.zeros(2)}, BAD / "legacy.pth", _use_new_zipfile_serialization=False)
    bad["legacy.pth"] = "legacy (non-zip) torch.save format"
    torch.save(Mlp(), BAD / "whole_module.pth")
    bad["whole_module.pth"] = "a pickled nn.Module, not a state dict"

    st = good_st.read_bytes()
    (BAD / "header_too_large.safetensors").write_bytes(struct.pack("<Q", (1 << 64) - 1) + b"{}" + b"\0" * 32)
    bad["header_too_large.safetensors"] = "header length 2^64-1"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]}}).encode()
    (BAD / "absurd_shape.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    bad["absurd_shape.safetensors"] = "shape of 2^80 elements over 8 bytes"
    (BAD / "truncated.safetensors").write_bytes(st[: len(st) - 100])
    bad["truncated.safetensors"] = "data section cut short"
    (BAD / "neither.json").write_text(json.dumps({"name": "not a model", "layers": 3}))
    bad["neither.json"] = "JSON that is neither a safetensors index nor a model spec"
    return bad


# --- Main ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    # Files are overwritten in place; other scripts' fixtures in models/ are left alone.
    MODELS.mkdir(exist_ok=True)
    expected = {}

    def save(name, obj, key_path=(), alternatives=(), stripped=(), **kw):
        path = MODELS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, path, **kw)
        expected[name] = expect_torch_save(path, list(key_path), list(alternatives), list(stripped))
        return path

    # The demo pair.
    src = DemoSource().eval()
    randomize_bn(src)
    demo_source = save("demo_source.pth", src.state_dict())
    tgt = DemoTarget().eval()
    randomize_bn(tgt)
    example = torch.randn(1, 3, 16, 16)
    traced = torch.jit.trace(tgt, example)
    traced.save(str(MODELS / "demo_target.pt"))
    expected["demo_target.pt"] = expect_torchscript(MODELS / "demo_target.pt")
    save("demo_target_state.pth", tgt.state_dict())
    truth = demo_truth()
    assert sorted(truth) == sorted(src.state_dict()), "demo truth must cover every source key"
    assert sorted(truth.values()) == sorted(tgt.state_dict()), "demo truth must cover every target key"
    # Proof that the truth is right: the converted target computes what the source does.
    converted = {truth[k]: v for k, v in src.state_dict().items()}
    check = DemoTarget().eval()
    check.load_state_dict(converted)
    assert torch.allclose(check(example), src(example), atol=1e-6)
    (MODELS / "demo_mapping_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    # The source network itself with its weights, so `weightmap verify --source-model` can
    # compare the adapted target's outputs with the original's.
    torch.jit.trace(src, example).save(str(MODELS / "demo_source_model.pt"))
    expected["demo_source_model.pt"] = expect_torchscript(MODELS / "demo_source_model.pt")

    # Wrapper prefixes.
    mlp = Mlp()
    sd = mlp.state_dict()
    save("dataparallel.pth", {f"module.{k}": v for k, v in sd.items()}, stripped=["module."])
    save("compiled.pth", {f"_orig_mod.{k}": v for k, v in sd.items()}, stripped=["_orig_mod."])
    save("compiled_dataparallel.pth", {f"module._orig_mod.{k}": v for k, v in sd.items()},
         stripped=["module.", "_orig_mod."])

    # Lightning-style checkpoint.
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    mlp(torch.randn(3, 12)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5)
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": collections.OrderedDict((f"model.{k}", v) for k, v in mlp.state_dict().items()),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.25),
                "best_model_path": "/runs/epoch=3.ckpt",
                "best_k_models": {"/runs/epoch=3.ckpt": torch.tensor(0.25), "/runs/epoch=2.ckpt": torch.tensor(0.3)},
                "dirpath": pathlib.PurePosixPath("/runs"),
            },
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "args": argparse.Namespace(lr=1e-3, batch_size=8, layers=[12, 24, 4], name="mlp"),
            "model": {"d": 12, "h": 24, "act": "relu", "dtype": torch.float32, "device": torch.device("cpu")},
            "started": datetime.datetime(2024, 5, 1, 12, 0, 0),
            "tags": {"baseline", "small"},
        },
    }
    save("lightning.ckpt", ckpt, key_path=["state_dict"], stripped=["model."])

    # A nested checkpoint: model + EMA weights + optimizer.
    ema = {k: v * 0.9 for k, v in sd.items()}
    save("nested.pth", {"epoch": 5, "model": sd, "ema": ema, "optimizer": opt.state_dict()},
         key_path=["model"], alternatives=["ema"])

    # Tied weights.
    lm = TinyLM()
    save("tied.pth", lm.state_dict())

    # Pickle protocols 4 and 5, and dtypes: bf16, fp16, int64, bool, float64, uint16
    # (a "new" dtype: saved with _rebuild_tensor_v3 over an untyped storage), views with
    # an offset and a transposed stride, an nn.Parameter, and a non-tensor entry.
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    mixed = collections.OrderedDict()
    mixed["emb.weight"] = torch.randn(10, 4).to(torch.bfloat16)
    mixed["proj.weight"] = torch.randn(4, 4).to(torch.float16)
    mixed["proj.bias"] = torch.randn(4)
    mixed["ids"] = torch.arange(5, dtype=torch.int64)
    mixed["mask"] = torch.tensor([True, False, True])
    mixed["scale"] = torch.tensor(2.0, dtype=torch.float64)
    mixed["codes"] = torch.arange(6, dtype=torch.int32).to(torch.uint16)
    mixed["view.base"] = base
    mixed["view.rows"] = base[1:3]
    mixed["view.transposed"] = base.t()
    mixed["param"] = nn.Parameter(torch.randn(3))
    mixed["block._extra_state"] = b"opaque extra state"
    save("mixed_dtypes.pth", mixed)
    save("proto4.pth", sd, pickle_protocol=4)
    save("proto5.pth", mixed, pickle_protocol=5)

    # Sharded safetensors (weight_map in key order, as transformers writes it) and one
    # single-file safetensors.
    flat = {k: v.contiguous().clone() for k, v in src.state_dict().items()}
    keys = list(flat)
    shard_dir = MODELS / "sharded"
    shard_dir.mkdir(exist_ok=True)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves, 1):
        name = f"model-{i:05d}-of-00002.safetensors"
        save_file({k: flat[k] for k in part}, shard_dir / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in flat.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    expected["sharded/model.safetensors.index.json"] = expect_sharded(shard_dir / "model.safetensors.index.json")
    save_file(flat, MODELS / "demo_source.safetensors")
    expected["demo_source.safetensors"] = expect_safetensors(MODELS / "demo_source.safetensors")

    # A scripted TorchScript model.
    scripted = torch.jit.script(Scripted())
    scripted.save(str(MODELS / "scripted.pt"))
    expected["scripted.pt"] = expect_torchscript(MODELS / "scripted.pt")

    bad = make_bad(demo_source, MODELS / "demo_source.safetensors")

    for name, e in expected.items():
        e["num_tensors"] = len(e["tensors"])
    out = {
        "generated_by": "scripts/make_fixtures.py",
        "torch_version": torch.__version__,
        "fixtures": expected,
        "bad": bad,
    }
    (MODELS / "expected.json").write_text(json.dumps(out, indent=1) + "\n")
    written = list(expected) + [f"bad/{b}" for b in bad] + ["demo_mapping_truth.json", "expected.json"]
    written += [f"sharded/{p.name}" for p in shard_dir.iterdir()]
    sizes = {name: (MODELS / name).stat().st_size for name in set(written)}
    big = {k: v for k, v in sizes.items() if v > 200_000}
    assert not big, f"fixtures over 200 KB: {big}"
    total = sum(sizes.values())
    assert total < 2_000_000, f"fixtures total {total} bytes"
    print(f"wrote {len(sizes)} files ({total} bytes) into {MODELS}", file=sys.stderr)


if __name__ == "__main__":
    main()
