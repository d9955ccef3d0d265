#![no_main]
//! The sharded-safetensors index reader, over two valid shards beside the index.
use libfuzzer_sys::fuzz_target;
use weightmap_fuzz::read::safetensors;

const SHARD_1: &[u8] = include_bytes!("../../models/sharded/model-00001-of-00002.safetensors");
const SHARD_2: &[u8] = include_bytes!("../../models/sharded/model-00002-of-00002.safetensors");

fuzz_target!(|data: &[u8]| {
    static SHARDS: std::sync::Once = std::sync::Once::new();
    SHARDS.call_once(|| {
        weightmap_fuzz::scratch("model-00001-of-00002.safetensors", SHARD_1);
        weightmap_fuzz::scratch("model-00002-of-00002.safetensors", SHARD_2);
    });
    let path = weightmap_fuzz::scratch("model.safetensors.index.json", data);
    let _ = safetensors::read_sharded(&path);
});
