//! The protocol core of our passt and pasta.
//!
//! Everything that can be decided without touching the operating system is decided here:
//! the resolved network configuration ([`config`]), the port-forwarding grammar and rules
//! ([`fwd`]), the wire formats ([`wire`]), what we learn of the guest ([`guest`]), the
//! configuration services answering it ([`services`]) and the [`engine`] that dispatches
//! guest frames to them. The core performs no I/O, reads no clock and draws no randomness of
//! its own: the OS shim (`os-shim`) and the simulator (`sim`) feed it inputs and carry out
//! what it decides, feeding it in [`batch`]es. See `DESIGN.md` for the contract.

#![forbid(unsafe_code)]

pub mod batch;
pub mod config;
pub mod control;
mod dispatch;
pub mod engine;
pub mod flow;
pub mod fwd;
pub mod guest;
pub mod rng;
pub mod services;
pub mod time;
pub mod wire;
