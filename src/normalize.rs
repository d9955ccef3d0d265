//! The normalize stage: detects and strips wrapper prefixes that training code adds to
//! every key: `module.` (DataParallel / DistributedDataParallel), `_orig_mod.`
//! (torch.compile), `_forward_module.` (Lightning Fabric), and Lightning's `model.`
//! (a LightningModule holding the network as `self.model`), also stacked
//! (`module._orig_mod.`).

use crate::error::Result;
use crate::read::{read_raw, ReadOptions};
use crate::spec::ModelSpec;
use std::path::Path;

/// Reads `path` into a model spec (names, shapes, dtypes, order, no tensor data), then
/// strips wrapper prefixes unless `options.keep_prefixes`: the model as the rest of the
/// pipeline sees it.
pub fn read_model(path: &Path, options: &ReadOptions) -> Result<ModelSpec> {
    let mut spec = read_raw(path, options)?;
    if !options.keep_prefixes {
        strip_wrapper_prefixes(&mut spec);
    }
    Ok(spec)
}

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

/// Puts back a stripped prefix that `reference` (the other model of a mapping) itself uses
/// for most of its names: `model.` in a Hugging Face checkpoint (`model.layers.0...` beside
/// `lm_head.weight`) is part of the network, not Lightning's wrapper, when the target is
/// a Hugging Face model too. Returns the prefixes restored.
pub fn restore_prefixes_used_by(spec: &mut ModelSpec, reference: &ModelSpec) -> Vec<String> {
    let mut restored = Vec::new();
    if reference.tensors.is_empty() {
        return restored;
    }
    while let Some(prefix) = spec.stripped_prefixes.last().cloned() {
        let share = reference
            .tensors
            .iter()
            .filter(|t| t.name.starts_with(&prefix))
            .count() as f64
            / reference.tensors.len() as f64;
        if share < LIGHTNING_MIN_SHARE {
            break;
        }
        // The part of each original name left after the outer prefixes were stripped.
        let outer: Vec<String> =
            spec.stripped_prefixes[..spec.stripped_prefixes.len() - 1].to_vec();
        let inner = |original: &str| -> String {
            let mut rest = original;
            for p in &outer {
                rest = rest.strip_prefix(p.as_str()).unwrap_or(rest);
            }
            rest.to_string()
        };
        let mut renamed = std::collections::HashMap::new();
        for t in spec.tensors.iter_mut() {
            let name = inner(&t.original_name);
            if name.starts_with(&prefix) && name != t.name {
                renamed.insert(t.name.clone(), name.clone());
                t.rename(&name);
            }
        }
        // Tied names point at other tensors of the same state dict: follow their renames.
        for t in spec.tensors.iter_mut() {
            if let Some(new) = t.tied_to.as_ref().and_then(|tied| renamed.get(tied)) {
                t.tied_to = Some(new.clone());
            }
        }
        spec.stripped_prefixes.pop();
        restored.push(prefix);
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Format, TensorInfo, TensorKind};

    fn spec(names: &[&str], state_dict_key: Option<&str>) -> ModelSpec {
        ModelSpec {
            path: "test".into(),
            format: Format::TorchZip,
            state_dict_key: state_dict_key.map(str::to_string),
            alternatives: vec![],
            stripped_prefixes: vec![],
            tensors: names
                .iter()
                .enumerate()
                .map(|(i, n)| TensorInfo::new(n, vec![2], "float32", TensorKind::Unknown, i))
                .collect(),
        }
    }

    fn names(s: &ModelSpec) -> Vec<&str> {
        s.tensors.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn stacked_wrappers_are_stripped_outermost_first() {
        let mut s = spec(
            &["module._orig_mod.conv.weight", "module._orig_mod.fc.bias"],
            None,
        );
        strip_wrapper_prefixes(&mut s);
        assert_eq!(names(&s), ["conv.weight", "fc.bias"]);
        assert_eq!(s.stripped_prefixes, ["module.", "_orig_mod."]);
        assert_eq!(s.tensors[0].original_name, "module._orig_mod.conv.weight");
    }

    #[test]
    fn a_prefix_on_only_some_keys_is_kept_unless_it_is_lightnings() {
        let mut s = spec(&["module.conv.weight", "fc.bias"], None);
        strip_wrapper_prefixes(&mut s);
        assert!(s.stripped_prefixes.is_empty());
        let lightning = [
            "model.a.weight",
            "model.b.weight",
            "model.c.weight",
            "model.d.weight",
            "criterion.weight",
        ];
        let mut s = spec(&lightning, None);
        strip_wrapper_prefixes(&mut s);
        assert_eq!(
            names(&s),
            [
                "a.weight",
                "b.weight",
                "c.weight",
                "d.weight",
                "criterion.weight"
            ]
        );
    }

    #[test]
    fn model_prefix_is_restored_when_the_other_model_uses_it() {
        let mut s = spec(
            &[
                "model.embed.weight",
                "model.layers.0.w",
                "model.layers.1.w",
                "model.norm.weight",
                "lm_head.weight",
            ],
            None,
        );
        s.tensors[4].tied_to = Some("model.embed.weight".into());
        strip_wrapper_prefixes(&mut s);
        s.tensors[4].tied_to = Some("embed.weight".into());
        assert_eq!(s.stripped_prefixes, ["model."]);
        let target = spec(
            &[
                "model.embed_tokens.weight",
                "model.layers.0.x",
                "model.layers.1.x",
                "model.norm.weight",
                "lm_head.weight",
            ],
            None,
        );
        assert_eq!(restore_prefixes_used_by(&mut s, &target), ["model."]);
        assert_eq!(names(&s)[..2], ["model.embed.weight", "model.layers.0.w"]);
        assert_eq!(s.tensors[4].name, "lm_head.weight");
        assert_eq!(s.tensors[4].tied_to.as_deref(), Some("model.embed.weight"));
        assert!(s.stripped_prefixes.is_empty());
        // A target without the prefix leaves the stripped names alone.
        let mut s2 = spec(
            &["model.a.w", "model.b.w", "model.c.w", "model.d.w", "head.w"],
            None,
        );
        strip_wrapper_prefixes(&mut s2);
        assert!(restore_prefixes_used_by(&mut s2, &spec(&["a.w", "b.w"], None)).is_empty());
        assert_eq!(names(&s2)[0], "a.w");
    }
}
