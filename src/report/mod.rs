//! The report stage: what weightmap shows people, as text and JSON.

pub mod counts;
pub mod explain;
pub mod html;
pub mod inspect;
pub mod patterns;
pub mod terminal;
pub mod tree;
