//! Wire formats: addresses, zero-copy views of guest frames ([`parse`]), emitters
//! ([`build`]), qemu's stream framing ([`stream`]), the Internet checksum ([`checksum`]),
//! domain names ([`dns_name`]), and the codecs of the messages the services answer and the
//! flows translate: [`dhcp`], [`dhcpv6`], [`ndp`], [`icmp_echo`], [`tcp`].

pub mod arp;
pub mod build;
pub mod checksum;
pub mod dhcp;
pub mod dhcpv6;
mod display;
pub mod dns_name;
pub mod external;
pub mod gso;
pub mod icmp_echo;
pub mod lent;
mod mac;
mod malformed;
pub mod ndp;
pub mod offload;
pub mod parse;
pub mod stream;
pub mod tcp;

pub use build::FrameQueue;
pub use display::INFINITE_LIFETIME;
pub(crate) use display::{fmt_flags, fmt_hex, Lifetime};
pub use mac::{MacAddr, MacParseError};
pub use malformed::Malformed;
