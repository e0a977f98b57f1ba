//! The OS shim: everything our passt and pasta ask of Linux.
//!
//! The core (`sans-io`) decides; this crate reads the host (rtnetlink, resolv.conf, procfs)
//! and will carry out the core's actions (epoll, tap, sockets, namespaces). It is the only
//! crate of the workspace that makes system calls.

pub mod bypass;
pub mod control_socket;
pub mod dgram_relay;
pub mod hostinfo;
pub mod isolation;
pub mod listeners;
mod loans;
pub mod logging;
pub mod netlink;
pub mod ns;
pub mod ns_agent;
pub mod ns_listeners;
pub mod nsconf;
pub mod pcap;
pub mod procnet;
pub mod qemu_socket;
pub mod reactor;
pub mod run_cutter;
pub mod seccomp;
pub mod slots;
pub mod sock_diag;
mod socket_sys;
pub mod sockets;
pub mod splice;
pub mod tap;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_netns;
pub mod tokens;
mod tx_loans;
pub mod vhost_user;
pub mod vnet_hdr;
