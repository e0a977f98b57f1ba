//! Wire formats: addresses now, packet views and emitters as the data path grows.

mod mac;

pub use mac::{MacAddr, MacParseError};
