//! The report stage: what weightmap shows people, as text and JSON.

pub mod inspect;
pub mod terminal;
pub mod tree;
pub mod explain;
pub mod html;
