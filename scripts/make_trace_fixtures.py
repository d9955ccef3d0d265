#!/usr/bin/env python3
"""Writes the TorchScript fixtures of the trace stage and what PyTorch says about them.

Run with the project's Python (torch 2.11.0):

    .venv/bin/python scripts/make_trace_fixtures.py

Writes, deterministically (fixed seeds, fixed shapes):

- models/trace_reorder.pt  traced; modules registered head, body, stem but run stem, body, head
- models/trace_tied.pt     traced; token embedding tied to the LM head (one tensor, two names)
- models/trace_buffers.pt  scripted; persistent and non-persistent buffers, BatchNorm statistics
                           (num_batches_tracked is never read in eval) and a plain tensor attribute
- models/trace_branch.pt   scripted; an `if` on the batch size skips `wide` for batches up to 100
- models/trace_views.pt    scripted; an index buffer first used by a view (`table[index.view(-1)]`):
                           the view is its first use, recorded as such
- models/trace_expected.json  per fixture: the input, the state dict, and two orders

With `--bench-out FILE` it writes instead the same (without hook_order) for every
../shared/bench/corpus/*/target.pt to FILE; tests/trace.rs and tests/torchscript.rs run that
at test time (exit status 3 when the bench is absent).

The orders, both computed here in Python and compared by tests/trace.rs with what weightmap's
own tracer reports:

- `hook_order` (fixtures only): forward pre-hooks on the eager model before scripting/tracing;
  when a module is entered its own parameters then buffers are listed, each tensor once.
- `profiler_order`: the PyTorch profiler on the TorchScript model loaded with torch.jit.load;
  every outermost aten op (not the ops it calls internally) with the tensors it was given,
  matched to state-dict entries by TensorImpl identity; the first op that takes a tensor.
  `untouched` lists the state-dict tensors that no op took.
"""

import json
import os
import sys
import warnings

# TorchScript writes a module's Final constants in set order, which follows Python's string
# hashing: fix the hash seed so that the archives come out byte for byte the same every run.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
import torch.nn as nn
from torch._C._profiler import _EventType, RecordScope

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
BENCH = os.path.join(os.path.dirname(ROOT), "shared", "bench", "corpus")

warnings.filterwarnings("ignore")


class Reorder(nn.Module):
    """Registration order (head, body, stem) differs from execution order (stem, body, head)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 5)
        self.body = nn.Sequential(nn.Linear(4 * 6 * 6, 16), nn.LayerNorm(16), nn.ReLU())
        self.stem = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = self.stem(x).flatten(1)
        return self.head(self.body(x))


class Tied(nn.Module):
    """A token embedding and an LM head sharing one weight; positions are a top-level parameter."""

    def __init__(self):
        super().__init__()
        self.lm_head = nn.Linear(8, 20, bias=False)
        self.tok = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.lm_head.weight = self.tok.weight

    def forward(self, ids):
        return self.lm_head(self.norm(self.tok(ids)))


class Scale(nn.Module):
    """Holds a non-persistent buffer, a persistent one and a plain tensor attribute."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gain", torch.full((6,), 2.0), persistent=False)
        self.register_buffer("shift", torch.linspace(0, 1, 6))
        self.offset = torch.ones(6)  # a tensor attribute, neither parameter nor buffer

    def forward(self, x):
        return x * self.gain + self.shift + self.offset


class Buffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.scale = Scale()
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.scale(self.bn(self.fc(x))))


class RelIndex(nn.Module):
    """A relative-position index buffer, first used by an op that only views it."""

    def __init__(self):
        super().__init__()
        self.register_buffer("index", torch.arange(16).remainder(9).reshape(4, 4))

    def forward(self):
        return self.index.view(-1)


class BiasTable(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(9, 2))

    def forward(self, idx):
        return self.table[idx].view(4, 4, 2)


class Views(nn.Module):
    """Swin-style relative position bias: `table[index.view(-1)]`. The index buffer's first
    use is the view (aten::view), before the table's (aten::index)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.rel = RelIndex()
        self.bias = BiasTable()

    def forward(self, x):
        return self.proj(x) + self.bias(self.rel()).sum(-1)


class Branch(nn.Module):
    """`wide` only runs for batches larger than 100; `early` and `late` always run."""

    def __init__(self):
        super().__init__()
        self.early = nn.Linear(8, 8)
        self.wide = nn.Linear(8, 8)
        self.late = nn.Linear(8, 2)

    def forward(self, x):
        x = self.early(x)
        if x.shape[0] > 100:
            x = self.wide(x)
        return self.late(x)


def parse_input(spec):
    """An input spec string as weightmap parses it: `1x3x8x8`, `1x6:i64:0-20` (upper exclusive)."""
    parts = spec.split(":")
    shape = [int(d) for d in parts[0].split("x")]
    if len(parts) == 1:
        return torch.randn(shape)
    lo, hi = (int(v) for v in parts[2].split("-"))
    return torch.randint(lo, hi, shape, dtype=torch.int64)


def state_dict_info(module):
    """The state dict as torch.jit.load(p).state_dict() lists it, with kinds and ties."""
    params = {id(p) for p in module.parameters()}
    first_by_impl = {}
    out = []
    for name, t in module.state_dict(keep_vars=True).items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        tied_to = first_by_impl.get(key)
        if tied_to is None:
            first_by_impl[key] = name
        out.append({
            "name": name,
            "shape": list(t.shape),
            "dtype": str(t.dtype).replace("torch.", ""),
            "kind": "parameter" if id(t) in params else "buffer",
            "tied_to": tied_to,
        })
    return out


def profiler_order(module, inputs):
    """First outermost aten op consuming each state-dict tensor, from the PyTorch profiler."""
    with torch.no_grad(), torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
    ) as prof:
        module(*inputs)
    ops = []

    def walk(event, inside_op):
        is_op = event.typed[0] == _EventType.TorchOp and event.extra_fields.scope == RecordScope.FUNCTION
        if is_op and not inside_op:
            ops.append(event)
        for child in sorted(event.children, key=lambda c: c.start_time_ns):
            walk(child, inside_op or is_op)

    for root in sorted(prof.profiler.kineto_results.experimental_event_tree(), key=lambda e: e.start_time_ns):
        walk(root, False)

    impl_to_name = {}
    for name, t in module.state_dict(keep_vars=True).items():
        # Tensor._cdata is the TensorImpl address, the same number the profiler reports.
        impl_to_name.setdefault(t._cdata, name)
    seen, order = set(), []

    def tensors(value):
        if isinstance(value, list):
            for v in value:
                yield from tensors(v)
        elif hasattr(value, "impl_ptr"):
            yield value.impl_ptr

    for op in ops:
        for arg in op.extra_fields.inputs:
            for impl in tensors(arg):
                name = impl_to_name.get(impl)
                if name is not None and name not in seen:
                    seen.add(name)
                    order.append({"name": name, "op": op.name})
    canonical = [e["name"] for e in state_dict_info(module) if e["tied_to"] is None]
    untouched = [n for n in canonical if n not in seen]
    return order, untouched


def hook_order(model, inputs):
    """Module pre-hook order on the eager model: each module's own tensors when it is entered."""
    seen, order, handles = set(), [], []
    names = {}
    for mod_name, mod in model.named_modules():
        for leaf, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            names.setdefault(id(t), f"{mod_name}.{leaf}" if mod_name else leaf)

    def hook(mod, _args):
        for _, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if id(t) not in seen:
                seen.add(id(t))
                order.append(names[id(t)])

    for mod in model.modules():
        handles.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return order


def make_fixture(name, model, input_specs, script):
    torch.manual_seed(0)
    model = model.eval()
    inputs = [parse_input(s) for s in input_specs]
    hooks = hook_order(model, inputs)
    with torch.no_grad():
        ts = torch.jit.script(model) if script else torch.jit.trace(model, tuple(inputs))
    path = os.path.join(MODELS, f"trace_{name}.pt")
    torch.jit.save(ts, path)
    loaded = torch.jit.load(path).eval()
    order, untouched = profiler_order(loaded, inputs)
    # The fixtures are built so that a module's tensors are read in registration order when
    # the module runs: then the hook order without untouched tensors is the op-level order.
    used = [n for n in hooks if n not in untouched]
    assert used == [e["name"] for e in order], (name, used, order)
    # Tensors held as plain attributes: TorchScript keeps them, the state dict does not.
    attributes = [
        f"{mod_name}.{key}" if mod_name else key
        for mod_name, mod in model.named_modules()
        for key, value in vars(mod).items()
        if isinstance(value, torch.Tensor)
    ]
    return {
        "file": f"trace_{name}.pt",
        "tensor_attributes": attributes,
        "method": "script" if script else "trace",
        "inputs": input_specs,
        "state_dict": state_dict_info(loaded),
        "hook_order": hooks,
        "profiler_order": order,
        "untouched": untouched,
    }


def input_spec_of(dummy):
    """case.json's dummy_input entry as an input spec string."""
    shape = "x".join(str(d) for d in dummy["shape"])
    if dummy["dtype"] == "int64":
        lo, hi = dummy["value_range"]
        return f"{shape}:i64:{lo}-{hi}"
    assert dummy["dtype"] == "float32", dummy
    return shape


def bench_expected():
    cases = {}
    if not os.path.isdir(BENCH):
        print(f"no bench corpus at {BENCH}; skipping trace_bench_expected.json", file=sys.stderr)
        return None
    for case in sorted(os.listdir(BENCH)):
        target = os.path.join(BENCH, case, "target.pt")
        if not os.path.isfile(target):
            continue
        with open(os.path.join(BENCH, case, "case.json")) as f:
            meta = json.load(f)
        specs = [input_spec_of(d) for d in meta["dummy_input"]]
        torch.manual_seed(0)
        inputs = [parse_input(s) for s in specs]
        module = torch.jit.load(target).eval()
        order, untouched = profiler_order(module, inputs)
        cases[case] = {
            "inputs": specs,
            "state_dict": state_dict_info(module),
            "profiler_order": order,
            "untouched": untouched,
        }
    return cases


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main():
    torch.set_num_threads(1)
    if len(sys.argv) == 3 and sys.argv[1] == "--bench-out":
        # Used by the tests: the bench is read-only and large, so its expectations are
        # computed when the tests run instead of being committed.
        bench = bench_expected()
        if bench is None:
            sys.exit(3)
        write_json(sys.argv[2], bench)
        return
    os.makedirs(MODELS, exist_ok=True)
    fixtures = {}
    for name, model_class, specs, script in [
        ("reorder", Reorder, ["1x3x8x8"], False),
        ("tied", Tied, ["1x6:i64:0-20"], False),
        ("buffers", Buffers, ["2x4"], True),
        ("branch", Branch, ["1x8"], True),
        ("views", Views, ["4x4"], True),
    ]:
        torch.manual_seed(1)  # the weights: the same on every run
        fixtures[name] = make_fixture(name, model_class(), specs, script)
    write_json(os.path.join(MODELS, "trace_expected.json"), fixtures)
    print(f"wrote {len(fixtures)} fixtures and models/trace_expected.json")


if __name__ == "__main__":
    main()
