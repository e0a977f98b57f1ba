//! Wire formats: addresses, zero-copy views of guest frames ([`parse`]), emitters
//! ([`build`]) and the Internet checksum ([`checksum`]).

pub mod build;
pub mod checksum;
mod mac;
pub mod parse;

pub use build::FrameQueue;
pub use mac::{MacAddr, MacParseError};
