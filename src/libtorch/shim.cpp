// weightmap's C++ shim over libtorch: what tch does not expose about a TorchScript module.
//
// - the state dict in registration order with kinds, ties and the module hierarchy;
// - the module's own tensors as `at::Tensor*` (tch's C_tensor) sharing storage with it;
// - forward on a list of tensors;
// - the static order (first use of each tensor in the inlined forward graph) and the
//   dynamic order (first op that takes each tensor while forward runs, seen through an
//   at::RecordFunction callback).
//
// Boundary rules: every function is `extern "C"`, nothing throws across it (c10::Error and
// std::exception are caught), errors come back as a strdup'd message in `*err` that the Rust
// side frees with wm_string_free, and lists come back as JSON strings (freed the same way)
// so that no C++ layout crosses the boundary.

#include <torch/script.h>
#include <torch/cuda.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

// One tensor of the module: a state-dict entry, or a tensor attribute outside the state dict.
struct Entry {
  std::string name;
  const char* kind;  // "parameter" or "buffer"
  bool persistent;   // false for tensor attributes that are neither parameter nor buffer
  int64_t tied_to;   // index of the first entry sharing this tensor, or -1
  at::Tensor tensor;
};

// One use of a tensor: entry index, the op, and the call (dynamic) or node (static) counter.
struct Use {
  size_t entry;
  std::string op;
  uint64_t call;
};

}  // namespace

// The opaque handle the Rust side holds.
struct wm_module {
  torch::jit::Module module;
  std::vector<Entry> entries;
  std::vector<std::string> modules;  // dotted submodule paths, registration order, "" = root
};

namespace {

char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

void set_err(char** err, const std::string& msg) {
  if (err != nullptr) {
    *err = dup(msg);
  }
}

// Runs `f`, turning any exception into an error string. c10::Error's what() carries a C++
// backtrace; what_without_backtrace() is the message a user can act on.
template <typename F>
bool guarded(char** err, F&& f) {
  try {
    f();
    return true;
  } catch (const c10::Error& e) {
    set_err(err, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_err(err, e.what());
  } catch (...) {
    set_err(err, "unknown C++ exception in libtorch");
  }
  return false;
}

void json_string(std::ostringstream& out, const std::string& s) {
  out << '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out << "\\\""; break;
      case '\\': out << "\\\\"; break;
      case '\n': out << "\\n"; break;
      case '\r': out << "\\r"; break;
      case '\t': out << "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out << buf;
        } else {
          out << c;
        }
    }
  }
  out << '"';
}

// torch's Python names for dtypes (torch.float32 -> "float32"), the names weightmap uses.
std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    case at::kFloat8_e4m3fn: return "float8_e4m3fn";
    case at::kFloat8_e5m2: return "float8_e5m2";
    case at::kUInt16: return "uint16";
    case at::kUInt32: return "uint32";
    case at::kUInt64: return "uint64";
    default: return c10::toString(t);
  }
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Lists the module's tensors the way Python's Module.state_dict() orders them
// (torch/nn/modules/module.py, _save_to_state_dict then children): a module's own
// parameters, then its own buffers, then each child module recursively. A ScriptModule's
// _parameters/_buffers/_modules views read the class type's attribute slots in order, so
// walking the slots gives the same order. Tensor attributes that are neither parameter nor
// buffer follow the buffers, marked not persistent (they are not in the state dict).
void collect(const torch::jit::Module& m, const std::string& prefix, wm_module& out) {
  out.modules.push_back(prefix);
  const auto& type = m.type();
  const auto obj = m._ivalue();
  const size_t n = type->numAttributes();
  for (int pass = 0; pass < 3; ++pass) {
    for (size_t i = 0; i < n; ++i) {
      const auto& slot = obj->getSlot(i);
      if (!slot.isTensor()) {
        continue;  // None parameters (Linear(bias=False)), modules, scalars
      }
      const bool is_param = type->is_parameter(i);
      const bool is_buffer = type->is_buffer(i);
      const bool wanted = (pass == 0 && is_param) || (pass == 1 && is_buffer && !is_param) ||
                          (pass == 2 && !is_param && !is_buffer);
      if (!wanted) {
        continue;
      }
      out.entries.push_back(Entry{join(prefix, type->getAttributeName(i)),
                                  is_param ? "parameter" : "buffer", pass != 2, -1,
                                  slot.toTensor()});
    }
  }
  for (const auto& child : m.named_children()) {
    collect(child.value, join(prefix, child.name), out);
  }
}

// Marks ties: an entry is tied to the first entry with the same TensorImpl, or with the same
// storage, offset, shape, strides and dtype (one tensor under two names after loading).
void mark_ties(wm_module& m) {
  std::unordered_map<const void*, size_t> by_impl;
  std::unordered_map<std::string, size_t> by_view;
  for (size_t i = 0; i < m.entries.size(); ++i) {
    auto& e = m.entries[i];
    const void* impl = e.tensor.unsafeGetTensorImpl();
    std::string view;
    if (e.tensor.has_storage() && e.tensor.storage().data() != nullptr) {
      std::ostringstream key;
      key << e.tensor.storage().data() << '/' << e.tensor.storage_offset() << '/'
          << e.tensor.sizes() << '/' << e.tensor.strides() << '/' << e.tensor.scalar_type();
      view = key.str();
    }
    auto hit = by_impl.find(impl);
    if (hit != by_impl.end()) {
      e.tied_to = static_cast<int64_t>(hit->second);
    } else if (!view.empty() && by_view.count(view) != 0) {
      e.tied_to = static_cast<int64_t>(by_view[view]);
    }
    if (e.tied_to < 0) {
      by_impl.emplace(impl, i);
      if (!view.empty()) {
        by_view.emplace(view, i);
      }
    }
  }
}

void refresh(wm_module& m) {
  m.entries.clear();
  m.modules.clear();
  collect(m.module, "", m);
  mark_ties(m);
}

size_t canonical(const wm_module& m, size_t i) {
  const auto t = m.entries[i].tied_to;
  return t < 0 ? i : static_cast<size_t>(t);
}

std::string uses_json(const std::vector<Use>& uses, uint64_t calls) {
  std::ostringstream out;
  out << "{\"calls\":" << calls << ",\"uses\":[";
  for (size_t i = 0; i < uses.size(); ++i) {
    if (i != 0) out << ',';
    out << "{\"entry\":" << uses[i].entry << ",\"call\":" << uses[i].call << ",\"op\":";
    json_string(out, uses[i].op);
    out << '}';
  }
  out << "]}";
  return out.str();
}

// Picks the output tensor: the tensor itself, the first tensor of a tuple or list (depth
// first), the `logits` entry of a dict or else its first tensor value.
bool first_tensor(const c10::IValue& v, at::Tensor& out) {
  if (v.isTensor()) {
    out = v.toTensor();
    return true;
  }
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) {
      if (first_tensor(e, out)) return true;
    }
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) {
      if (first_tensor(e, out)) return true;
    }
  } else if (v.isGenericDict()) {
    auto dict = v.toGenericDict();
    for (const auto& kv : dict) {
      if (kv.key().isString() && kv.key().toStringRef() == "logits" && first_tensor(kv.value(), out))
        return true;
    }
    for (const auto& kv : dict) {
      if (first_tensor(kv.value(), out)) return true;
    }
  }
  return false;
}

// Every tensor of an output, depth first: a tensor, the elements of a tuple or list, a
// dict's values in insertion order (what a reference saved as a list of outputs holds).
void all_tensors(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) all_tensors(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) all_tensors(e, out);
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) all_tensors(kv.value(), out);
  }
}

c10::IValue run_forward(wm_module* m, void* const* inputs, size_t n) {
  std::vector<c10::IValue> args;
  args.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    args.emplace_back(*static_cast<at::Tensor*>(inputs[i]));
  }
  at::NoGradGuard no_grad;
  return m->module.forward(std::move(args));
}

c10::Device parse_device(const char* device) {
  c10::Device d{std::string(device)};  // throws c10::Error on anything unknown
  if (d.is_cuda() && !torch::cuda::is_available()) {
    throw std::runtime_error(
        "CUDA is not available (libtorch found no CUDA device or driver); use --device cpu");
  }
  if (d.is_cuda() && d.has_index() &&
      static_cast<size_t>(d.index()) >= torch::cuda::device_count()) {
    throw std::runtime_error("no CUDA device " + std::to_string(d.index()) + " (this machine has " +
                             std::to_string(torch::cuda::device_count()) + ")");
  }
  return d;
}

// ---- dynamic order: an at::RecordFunction callback -------------------------------------

// The recorder of the trace in progress on this thread; the callback is thread-local too.
struct Recorder {
  std::unordered_map<const void*, size_t> impl_to_entry;
  std::vector<bool> seen;  // per entry: used at least once (for the progress count)
  std::vector<Use> uses;
  uint64_t calls = 0;
  int depth = 0;  // nesting of aten ops: only the outermost op of a call tree counts
};
thread_local Recorder* t_recorder = nullptr;

// Progress of the trace in progress (one at a time, see g_trace_mutex), read by another
// thread to draw a progress bar: outermost ops seen, distinct entries used.
std::atomic<uint64_t> g_trace_ops{0};
std::atomic<uint64_t> g_trace_tensors{0};

void record_tensor(Recorder& r, const at::Tensor& t, const char* op) {
  if (!t.defined()) return;
  auto hit = r.impl_to_entry.find(t.unsafeGetTensorImpl());
  if (hit != r.impl_to_entry.end()) {
    r.uses.push_back(Use{hit->second, op, r.calls});
    if (hit->second < r.seen.size() && !r.seen[hit->second]) {
      r.seen[hit->second] = true;
      g_trace_tensors.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void record_value(Recorder& r, const c10::IValue& v, const char* op) {
  if (v.isTensor()) {
    record_tensor(r, v.toTensor(), op);
  } else if (v.isList()) {  // Tensor[] and Tensor?[] (aten::cat, aten::index) included
    for (const auto& e : v.toListRef()) record_value(r, e, op);
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) record_value(r, e, op);
  }
}

// A non-null context for every op, so that the end callback runs for each start callback
// and the nesting depth stays balanced.
struct OpContext : at::ObserverContext {};

std::unique_ptr<at::ObserverContext> on_op_start(const at::RecordFunction& fn) {
  Recorder* r = t_recorder;
  if (r == nullptr) return nullptr;
  // Ops an op calls internally (aten::linear -> aten::t, aten::addmm) take the same tensors
  // again; the op the model itself called is the outermost one.
  if (r->depth++ == 0 && fn.needsInputs()) {
    // A boxed call (the TorchScript interpreter's) hands over its whole stack; the op's own
    // arguments are the last num_inputs() values, as PyTorch's profiler reads them.
    const auto all = fn.inputs();
    const size_t n = std::min(fn.num_inputs(), all.size());
    for (const auto& v : all.slice(all.size() - n)) record_value(*r, v, fn.name());
    ++r->calls;
    g_trace_ops.store(r->calls, std::memory_order_relaxed);
  }
  return std::make_unique<OpContext>();
}

void on_op_end(const at::RecordFunction&, at::ObserverContext*) {
  Recorder* r = t_recorder;
  if (r != nullptr && r->depth > 0) --r->depth;
}

// Removes the callback and the recorder and restores the graph-executor setting however the
// trace ends.
// The graph-executor setting is process-wide: one trace at a time, so that concurrent traces
// (test threads, a parallel mapper) cannot restore it under each other's feet.
std::mutex g_trace_mutex;

struct TraceScope {
  std::lock_guard<std::mutex> one_at_a_time{g_trace_mutex};
  at::CallbackHandle handle;
  torch::jit::GraphOptimizerEnabledGuard optimize{false};
  at::RecordFunctionGuard enabled{true};  // in case something turned RecordFunction off
  explicit TraceScope(Recorder* r) {
    g_trace_ops.store(0, std::memory_order_relaxed);
    g_trace_tensors.store(0, std::memory_order_relaxed);
    t_recorder = r;
    handle = at::addThreadLocalCallback(at::RecordFunctionCallback(on_op_start, on_op_end)
                                            .needsInputs(true)
                                            .scopes({at::RecordScope::FUNCTION}));
  }
  ~TraceScope() {
    at::removeCallback(handle);
    t_recorder = nullptr;
  }
};

// ---- static order: the inlined forward graph -------------------------------------------

// Ops that only pack values for the real consumer; the consumer is reported instead.
bool is_packing(const torch::jit::Node* n) {
  const auto k = n->kind();
  return k == c10::prim::ListConstruct || k == c10::prim::TupleConstruct ||
         k == c10::prim::DictConstruct;
}

std::string consumer_op(const torch::jit::Node* n) {
  for (int hops = 0; hops < 8 && is_packing(n); ++hops) {
    const auto& uses = n->output()->uses();
    if (uses.empty()) break;
    const torch::jit::Node* next = uses[0].user;
    for (const auto& u : uses) {
      if (u.user->isBefore(next)) next = u.user;
    }
    n = next;
  }
  return n->kind().toQualString();
}

// Ops that read a tensor's metadata, not its values (`F.layer_norm(x, self.weight.shape)`,
// `if self.bias is not None`): not uses. They run outside the dispatcher, so the dynamic
// order does not see them either.
bool reads_metadata_only(const torch::jit::Node* n) {
  static const std::unordered_set<std::string> ops = {
      "aten::size",   "aten::dim",    "aten::numel",     "aten::len",       "aten::__is__",
      "aten::__isnot__", "prim::shape", "prim::dtype",   "prim::device",    "prim::layout",
      "prim::is_cuda", "prim::requires_grad", "prim::isinstance", "aten::is_floating_point",
      "aten::is_complex"};
  return ops.count(n->kind().toQualString()) != 0;
}

struct GraphWalk {
  const std::unordered_map<std::string, size_t>& name_to_entry;
  std::unordered_map<const torch::jit::Value*, std::string> paths;  // value -> attribute path
  std::vector<Use> uses;
  uint64_t nodes = 0;

  void block(const torch::jit::Block* b) {
    for (const torch::jit::Node* n : b->nodes()) node(n);
  }

  void node(const torch::jit::Node* n) {
    if (n->kind() == c10::prim::GetAttr) {
      auto base = paths.find(n->input(0));
      if (base != paths.end()) {
        paths[n->output()] = join(base->second, n->s(c10::attr::name));
      }
      return;
    }
    if (n->kind() == c10::prim::unchecked_cast) {  // Optional[Tensor] -> Tensor, same value
      auto base = paths.find(n->input(0));
      if (base != paths.end()) paths[n->output()] = base->second;
      return;
    }
    if (reads_metadata_only(n)) return;
    bool any = false;
    std::string op;
    for (const torch::jit::Value* v : n->inputs()) {
      auto p = paths.find(v);
      if (p == paths.end()) continue;
      auto e = name_to_entry.find(p->second);
      if (e == name_to_entry.end()) continue;
      if (!any) op = consumer_op(n);
      any = true;
      uses.push_back(Use{e->second, op, nodes});
    }
    ++nodes;
    for (const torch::jit::Block* b : n->blocks()) block(b);
  }
};

// Counts the nodes of `b` by kind (`aten::conv2d`), If/Loop bodies included.
void count_ops(const torch::jit::Block* b, std::map<std::string, size_t>& ops) {
  for (const auto* n : b->nodes()) {
    ++ops[n->kind().toQualString()];
    for (const auto* sub : n->blocks()) count_ops(sub, ops);
  }
}

}  // namespace

extern "C" {

// Frees a string returned by any wm_ function (results and error messages).
void wm_string_free(char* s) { std::free(s); }

// 1 when libtorch sees a usable CUDA device.
int wm_cuda_is_available() {
  try {
    return torch::cuda::is_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// Loads a TorchScript archive onto `device` ("cpu", "cuda", "cuda:1") in eval mode.
// Returns null and sets *err on failure. The archive's debug files (`*.debug_pkl`: source
// ranges for error messages, the bulk of a large archive's code) are not loaded: nothing
// here reads them, and unpickling them is a large share of the load.
wm_module* wm_module_load(const char* path, const char* device, char** err) {
  wm_module* out = nullptr;
  guarded(err, [&] {
    const c10::Device d = parse_device(device);
    auto m = std::make_unique<wm_module>();
    m->module = torch::jit::load(std::string(path), d, /*load_debug_files=*/false);
    m->module.eval();
    refresh(*m);
    out = m.release();
  });
  return out;
}

void wm_module_free(wm_module* m) { delete m; }

// Moves the module's parameters and buffers to `device`. Returns 0, or -1 with *err set.
int wm_module_to(wm_module* m, const char* device, char** err) {
  return guarded(err, [&] {
           m->module.to(parse_device(device));
           refresh(*m);
         })
             ? 0
             : -1;
}

// The state dict and hierarchy as JSON: {"entries": [{"name", "kind", "shape", "dtype",
// "persistent", "tied_to" (name or null)}], "modules": ["", "a", "a.b", ...]}.
char* wm_module_entries_json(wm_module* m, char** err) {
  char* out = nullptr;
  guarded(err, [&] {
    std::ostringstream js;
    js << "{\"entries\":[";
    for (size_t i = 0; i < m->entries.size(); ++i) {
      const auto& e = m->entries[i];
      if (i != 0) js << ',';
      js << "{\"name\":";
      json_string(js, e.name);
      js << ",\"kind\":\"" << e.kind << "\",\"shape\":[";
      const auto sizes = e.tensor.sizes();
      for (size_t d = 0; d < sizes.size(); ++d) js << (d ? "," : "") << sizes[d];
      js << "],\"dtype\":";
      json_string(js, dtype_name(e.tensor.scalar_type()));
      js << ",\"persistent\":" << (e.persistent ? "true" : "false") << ",\"tied_to\":";
      if (e.tied_to < 0) {
        js << "null";
      } else {
        json_string(js, m->entries[static_cast<size_t>(e.tied_to)].name);
      }
      js << '}';
    }
    js << "],\"modules\":[";
    for (size_t i = 0; i < m->modules.size(); ++i) {
      if (i != 0) js << ',';
      json_string(js, m->modules[i]);
    }
    js << "]}";
    out = dup(js.str());
  });
  return out;
}

size_t wm_module_entry_count(const wm_module* m) { return m->entries.size(); }

// A new at::Tensor* (tch's C_tensor) for entry `i`, sharing its storage with the module;
// null when `i` is out of range. The caller owns the handle (tch frees it on drop).
void* wm_module_entry_tensor(const wm_module* m, size_t i) {
  if (i >= m->entries.size()) return nullptr;
  try {
    return new at::Tensor(m->entries[i].tensor);
  } catch (...) {
    return nullptr;
  }
}

// Runs forward on `n` tensors (at::Tensor*) without grad; returns a new at::Tensor* holding
// the output (see first_tensor), or null with *err set.
void* wm_module_forward(wm_module* m, void* const* inputs, size_t n, char** err) {
  void* out = nullptr;
  guarded(err, [&] {
    const c10::IValue result = run_forward(m, inputs, n);
    at::Tensor t;
    if (!first_tensor(result, t)) {
      throw std::runtime_error("forward returned " + result.tagKind() + " with no tensor in it");
    }
    out = new at::Tensor(t);
  });
  return out;
}

// Runs forward like wm_module_forward and returns every tensor of its output (see
// all_tensors) as a malloc'd array of *count new at::Tensor* (free the array with
// wm_array_free once each tensor is taken), or null with *err set.
void** wm_module_forward_all(wm_module* m, void* const* inputs, size_t n, size_t* count,
                             char** err) {
  void** out = nullptr;
  *count = 0;
  guarded(err, [&] {
    const c10::IValue result = run_forward(m, inputs, n);
    std::vector<at::Tensor> tensors;
    all_tensors(result, tensors);
    if (tensors.empty()) {
      throw std::runtime_error("forward returned " + result.tagKind() + " with no tensor in it");
    }
    out = static_cast<void**>(std::malloc(tensors.size() * sizeof(void*)));
    if (out == nullptr) throw std::bad_alloc();
    for (size_t i = 0; i < tensors.size(); ++i) out[i] = new at::Tensor(tensors[i]);
    *count = tensors.size();
  });
  return out;
}

// Frees an array returned by wm_module_forward_all (not the tensors it pointed to).
void wm_array_free(void** a) { std::free(a); }

// Dynamic order: runs forward on the inputs and lists, in call order, every outermost op's
// inputs that are the module's tensors, as {"calls": N, "uses": [{"entry", "call", "op"}]}
// with `entry` the first name of a tied tensor. Graph-executor optimizations are off for the
// run so that fusion cannot hide ops.
char* wm_module_trace_dynamic(wm_module* m, void* const* inputs, size_t n, char** err) {
  char* out = nullptr;
  guarded(err, [&] {
    Recorder rec;
    for (size_t i = 0; i < m->entries.size(); ++i) {
      rec.impl_to_entry.emplace(m->entries[i].tensor.unsafeGetTensorImpl(), canonical(*m, i));
    }
    rec.seen.assign(m->entries.size(), false);
    {
      TraceScope scope(&rec);
      run_forward(m, inputs, n);
    }
    if (rec.calls == 0) {
      throw std::runtime_error(
          "no op was observed while forward ran (RecordFunction is disabled in this libtorch?); "
          "use the static order");
    }
    out = dup(uses_json(rec.uses, rec.calls));
  });
  return out;
}

// The dynamic trace in progress: outermost ops seen and distinct tensors used so far (any
// thread may ask; zeros before the first trace).
void wm_trace_progress(uint64_t* ops, uint64_t* tensors) {
  *ops = g_trace_ops.load(std::memory_order_relaxed);
  *tensors = g_trace_tensors.load(std::memory_order_relaxed);
}

// Static order: walks forward's graph with every method call inlined and lists, in graph
// order (If/Loop bodies in place), every node input that is one of the module's tensors
// reached through prim::GetAttr from `self`, in the same JSON as the dynamic order (`call` is
// the node's position). Unlike the dynamic order, `entry` is the name the graph used, tied
// alias or not. Packing nodes (ListConstruct, ...) report the op that consumes them.
char* wm_module_trace_static(wm_module* m, char** err) {
  char* out = nullptr;
  guarded(err, [&] {
    auto method = m->module.get_method("forward");
    auto graph = method.graph()->copy();
    torch::jit::Inline(*graph);
    std::unordered_map<std::string, size_t> name_to_entry;
    for (size_t i = 0; i < m->entries.size(); ++i) {
      name_to_entry.emplace(m->entries[i].name, i);
    }
    GraphWalk walk{name_to_entry, {}, {}, 0};
    walk.paths[graph->inputs().at(0)] = "";
    walk.block(graph->block());
    out = dup(uses_json(walk.uses, walk.nodes));
  });
  return out;
}

// The forward graph in brief, for comparing two exports: {"schema": forward's schema
// ("forward(__torch__.M self, Tensor x) -> Tensor"), "ops": {kind: count}} over the graph
// with every method call inlined.
char* wm_module_graph_summary(wm_module* m, char** err) {
  char* out = nullptr;
  guarded(err, [&] {
    auto method = m->module.get_method("forward");
    auto graph = method.graph()->copy();
    torch::jit::Inline(*graph);
    std::map<std::string, size_t> ops;
    count_ops(graph->block(), ops);
    std::ostringstream schema;
    schema << method.function().getSchema();
    std::ostringstream js;
    js << "{\"schema\":";
    json_string(js, schema.str());
    js << ",\"ops\":{";
    bool first = true;
    for (const auto& [kind, count] : ops) {
      if (!first) js << ',';
      first = false;
      json_string(js, kind);
      js << ':' << count;
    }
    js << "}}";
    out = dup(js.str());
  });
  return out;
}

}  // extern "C"
