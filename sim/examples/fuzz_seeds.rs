//! Writes seed corpora for the fuzz targets, derived from `testdata/`, one directory per
//! target: `cargo run -p sim --example fuzz_seeds -- OUTDIR` (fuzz/run-bounded does).

use std::path::{Path, PathBuf};

/// Seeds written by hand, for the text targets.
const PORT_SPECS: &[&str] = &[
    "22",
    "1024-2048",
    "80:8080",
    "~22",
    "0.0.0.0/22",
    "all",
    "auto",
    "none",
    "127.0.0.1%lo/8080-8090:9080-9090",
    "~1-1000,2000",
    "[::1]/443",
    "0.0.0.0/8080:10.88.0.2/80",
    "[::]/8080:fd00::2/80",
    "8000-8004:10.88.0.2/80-84",
    "::/8080:80",
    "*%eth0/22,80:[fd00::2]",
    "127.0.0.1/all",
    "8000-8010,auto",
    "[::]/all:fd00::2,~22",
];
const RESOLV: &[&str] = &[
    "nameserver 203.0.113.53\nnameserver 2001:db8:2::53\nsearch lab.test example.org\n",
    "domain example.com\noptions ndots:2\nnameserver 127.0.0.53 # systemd-resolved\n",
    "nameserver fe80::1%eth0\nsearch a b c d e f\n",
];
/// Command lines for the `cli` target: a mode byte (odd: pasta), then NUL-separated words.
const CLI: &[(u8, &[&str])] = &[
    (1, &["--config-net", "-t", "8080", "--", "sh"]),
    (
        0,
        &[
            "-f",
            "-s",
            "/tmp/s",
            "-a",
            "192.0.2.2",
            "-n",
            "24",
            "-g",
            "192.0.2.1",
        ],
    ),
    (
        1,
        &[
            "-6",
            "--dns-forward",
            "198.51.100.53",
            "-T",
            "auto",
            "-u",
            "none",
        ],
    ),
    (
        1,
        &[
            "--pcap",
            "/tmp/p.pcap",
            "-m",
            "1500",
            "--netns",
            "/run/netns/x",
        ],
    ),
];

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds OUTDIR"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let write = |target: &str, seeds: Vec<Vec<u8>>| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("create the seed directory");
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:04}")), s).expect("write a seed");
        }
        println!("{target}: {} seeds", seeds.len());
    };
    for t in [
        "engine",
        "wire",
        "dhcp",
        "dhcpv6",
        "ndp",
        "pcap_replay",
        "control",
    ] {
        write(t, sim::fuzzing::seeds(t, &root));
    }
    let text = |l: &[&str]| l.iter().map(|s| s.as_bytes().to_vec()).collect();
    write("port_spec", text(PORT_SPECS));
    write("resolv_conf", text(RESOLV));
    write(
        "procnet",
        text(&[
            "  sl  local_address rem_address   st\n   0: 00000000:1F90 00000000:0000 0A 0\n",
            "  sl  local_address rem_address   st\n   1: 0100007F:0035 00000000:0000 07 0\n",
        ]),
    );
    write(
        "cli",
        CLI.iter()
            .map(|(mode, words)| {
                let mut v = vec![*mode];
                v.extend_from_slice(words.join("\0").as_bytes());
                v
            })
            .collect(),
    );
    let mut netlink = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(root.join("testdata/netlink")) {
        for d in dirs.flatten() {
            for f in ["links.bin", "addrs.bin", "routes.bin"] {
                if let Ok(b) = std::fs::read(d.path().join(f)) {
                    netlink.push(b);
                }
            }
        }
    }
    write("netlink", netlink);
}
