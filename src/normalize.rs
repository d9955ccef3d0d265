//! The normalize stage: detects and strips wrapper prefixes that training code adds to
//! every key: `module.` (DataParallel / DistributedDataParallel), `_orig_mod.`
//! (torch.compile), `_forward_module.` (Lightning Fabric), and Lightning's `model.`
//! (a LightningModule holding the network as `self.model`), also stacked
//! (`module._orig_mod.`).

use crate::spec::ModelSpec;

/// Prefixes that wrappers add and that no model's own structure needs.
pub const WRAPPER_PREFIXES: &[&str] = &["module.", "_orig_mod.", "_forward_module."];

/// Lightning's `model.` prefix: also a real module name in HF models (`model.layers.0...`),
/// so it is stripped only when most, but not necessarily all, keys carry it and the
/// file looks like a training wrapper (see [`strip_wrapper_prefixes`]).
pub const LIGHTNING_PREFIX: &str = "model.";

/// Share of keys that must carry `model.` for it to count as Lightning's wrapper when
/// some keys (loss weights, metric states) sit beside the network.
pub const LIGHTNING_MIN_SHARE: f64 = 0.8;

/// Strips wrapper prefixes from every tensor name, repeatedly (stacked wrappers), and
/// records them in `spec.stripped_prefixes`. A generic wrapper prefix is stripped only when
/// every key has it. `model.` is stripped when every key has it and the checkpoint came
/// from a Lightning-style dict (`state_dict` key), or when at least
/// [`LIGHTNING_MIN_SHARE`] of keys have it and the rest are not part of the network
/// (those keep their names, and the mapper leaves them unmatched).
pub fn strip_wrapper_prefixes(spec: &mut ModelSpec) {
    loop {
        if spec.tensors.is_empty() {
            return;
        }
        let all_have = |p: &str| spec.tensors.iter().all(|t| t.name.starts_with(p));
        if let Some(p) = WRAPPER_PREFIXES.iter().find(|p| all_have(p)) {
            strip(spec, p);
            continue;
        }
        let with_model = spec
            .tensors
            .iter()
            .filter(|t| t.name.starts_with(LIGHTNING_PREFIX))
            .count();
        let share = with_model as f64 / spec.tensors.len() as f64;
        let lightning_dict = spec.state_dict_key.as_deref() == Some("state_dict");
        let partial = with_model < spec.tensors.len() && share >= LIGHTNING_MIN_SHARE;
        if with_model > 0 && ((share == 1.0 && lightning_dict) || partial) {
            strip(spec, LIGHTNING_PREFIX);
            continue;
        }
        return;
    }
}

fn strip(spec: &mut ModelSpec, prefix: &str) {
    for t in spec.tensors.iter_mut() {
        if let Some(rest) = t.name.strip_prefix(prefix) {
            let rest = rest.to_string();
            t.rename(&rest);
        }
        if let Some(tied) = t.tied_to.as_mut() {
            if let Some(rest) = tied.strip_prefix(prefix) {
                *tied = rest.to_string();
            }
        }
    }
    spec.stripped_prefixes.push(prefix.to_string());
}
