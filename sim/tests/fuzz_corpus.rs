//! The fuzz targets' functions (sim::fuzzing) over their seeds, derived from testdata/, and
//! over committed inputs that once crashed them (fuzz/regressions/TARGET/*), plus a few
//! thousand deterministic pseudo-random mutations of the seeds: a short fuzz run in
//! `cargo test`. The long runs are fuzz/run-bounded's, in CI.

use std::path::{Path, PathBuf};

use sim::fuzzing;
use sim::rng::SimRng;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Seeds, regressions, then mutations of the seeds (bytes flipped, cut, spliced).
fn run(target: &str, f: fn(&[u8]), mutations: usize) {
    let mut inputs = fuzzing::seeds(target, &root());
    let seeds = inputs.len();
    if let Ok(dir) = std::fs::read_dir(root().join("fuzz/regressions").join(target)) {
        for e in dir.flatten() {
            inputs.push(std::fs::read(e.path()).unwrap());
        }
    }
    for input in &inputs {
        f(input);
    }
    if seeds == 0 {
        return;
    }
    let mut rng = SimRng::new(0x5eed ^ target.len() as u64);
    for _ in 0..mutations {
        let mut m = inputs[rng.below(seeds as u64) as usize].clone();
        match rng.below(4) {
            0 if !m.is_empty() => {
                for _ in 0..=rng.below(8) {
                    let i = rng.below(m.len() as u64) as usize;
                    m[i] = rng.below(256) as u8;
                }
            }
            1 if !m.is_empty() => {
                let keep = rng.below(m.len() as u64) as usize;
                m.truncate(keep);
            }
            2 => {
                let other = &inputs[rng.below(inputs.len() as u64) as usize];
                let at = rng.below(other.len() as u64 + 1) as usize;
                m.extend_from_slice(&other[at..]);
            }
            _ => {
                let at = rng.below(m.len() as u64 + 1) as usize;
                let byte = rng.below(256) as u8;
                m.insert(at, byte);
            }
        }
        f(&m);
    }
}

#[test]
fn control() {
    run("control", fuzzing::control, 5000);
}

#[test]
fn engine_ops() {
    run("engine", fuzzing::engine_ops, 300);
}

#[test]
fn wire() {
    run("wire", fuzzing::wire, 3000);
}

#[test]
fn dhcp() {
    run("dhcp", fuzzing::dhcp, 2000);
}

#[test]
fn dhcpv6() {
    run("dhcpv6", fuzzing::dhcpv6, 2000);
}

#[test]
fn ndp() {
    run("ndp", fuzzing::ndp, 2000);
}

#[test]
fn pcap_replay() {
    run("pcap_replay", fuzzing::pcap_replay, 100);
}

#[test]
fn text_targets() {
    for s in [
        "22",
        "1-1024:2000",
        "~80",
        "all",
        "",
        "0.0.0.0/80",
        "[::1]/22",
        "[::]/8080:fd00::2/80",
        "8000-8004:10.88.0.2/80-84",
        "*/1-100,~50",
        "0.0.0.0/all:10.0.0.1,~1-1000",
        "80-90,auto",
    ] {
        fuzzing::port_spec(s.as_bytes());
    }
    fuzzing::resolv_conf(b"nameserver 203.0.113.53\nsearch a b\n");
    fuzzing::procnet(PROC_NET_TCP.as_bytes());
    fuzzing::procnet(b"  sl  local\n   0: 00000000:0035 00000000:0000 07 0\n");
}

/// A /proc/net/tcp excerpt, as the kernel prints it.
const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4711 1 0000000000000000 100 0 0 10 0
   1: 020011AC:D431 0A0071CB:0050 01 00000000:00000000 00:00000000 00000000  1000        0 4713 1 0000000000000000 20 4 1 10 -1
";
