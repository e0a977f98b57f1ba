//! What the engine benchmark stands on: a fake host whose sockets cost next to nothing
//! ([`fake_host`]), the lab's configuration and captured frames ([`lab`]), and the guest's end
//! of a TCP connection ([`guest_tcp`]).

pub mod fake_host;
pub mod guest_tcp;
pub mod lab;
