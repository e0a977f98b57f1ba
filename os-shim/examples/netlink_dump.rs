//! Dumps this network namespace's links, addresses and routes over rtnetlink and writes the
//! kernel's raw answers to `OUTDIR/links.bin`, `OUTDIR/addrs.bin` and `OUTDIR/routes.bin`
//! (canned data for `os-shim/tests/netlink_parse.rs`, see `testdata/netlink/record.sh`).
//! Then it prints what it parsed from them.
//!
//! Usage: `netlink_dump OUTDIR`

use std::path::PathBuf;
use std::process::ExitCode;

use os_shim::netlink::{parse_dump, Dump, Netlink};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(outdir), None) = (args.next(), args.next()) else {
        eprintln!("usage: netlink_dump OUTDIR");
        return ExitCode::from(2);
    };
    match run(PathBuf::from(outdir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netlink_dump: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(outdir: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&outdir)?;
    let mut nl = Netlink::open()?;
    let mut raw = Vec::new();
    for (dump, file) in [
        (Dump::Links, "links.bin"),
        (Dump::Addrs, "addrs.bin"),
        (Dump::Routes, "routes.bin"),
    ] {
        let bytes = nl.dump_raw(dump)?;
        std::fs::write(outdir.join(file), &bytes)?;
        raw.push(bytes);
    }
    let net = parse_dump(&raw[0], &raw[1], &raw[2])?;
    for l in &net.links {
        println!(
            "link {} {} mtu {} mac {} up {} loopback {}",
            l.index,
            l.name,
            l.mtu,
            l.mac.map_or("-".to_string(), |m| m.to_string()),
            l.up,
            l.loopback
        );
    }
    for a in &net.addrs {
        println!(
            "addr {} {}/{} scope {} flags {:#x}",
            a.ifindex, a.addr, a.prefix_len, a.scope, a.flags
        );
    }
    for r in &net.routes {
        println!(
            "route {}/{} {:?} metric {} proto {} scope {} type {} src {:?} mtu {:?}",
            r.dst,
            r.dst_len,
            r.nexthops,
            r.priority,
            r.protocol,
            r.scope,
            r.kind,
            r.pref_src,
            r.mtu
        );
    }
    Ok(())
}
