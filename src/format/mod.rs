//! File formats, each read and written in one place (as candle keeps one module per
//! format): the pickle VM and writer, `torch.save` zips, safetensors, JSON. Formats know
//! no pipeline stage: the read stage builds model specs from them, apply writes with them.

pub mod json;
pub mod pickle;
pub mod pickle_writer;
pub mod safetensors;
pub mod torch_zip;
pub mod zip_writer;
