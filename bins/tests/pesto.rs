//! `pesto` against a fake server: a UNIX socket in a temporary directory that sends a hello
//! and tables with the protocol codec, and records what pesto sends back. The argument
//! vectors are those of pesto's callers (Podman's pesto client, RootlessKit's pesto port
//! driver); what comes back must decode to the expected tables. No root, no namespaces.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{bin, run_timeout, show, TempDir};
use sans_io::control::{encode_listing, Caps, Pif, Stream, TablesBuilder};
use sans_io::fwd::rule::ForwardRule;

const TIMEOUT: Duration = Duration::from_secs(20);
const ALL_CAPS: Caps = Caps(0x3f);

/// A table as the fake server lists it: pif, caps, rules in their printed form.
type Listed = (Pif, Caps, Vec<ForwardRule>);

/// A server for one connection: sends `bytes`, returns what the client sent until it closed.
fn serve(dir: &TempDir, bytes: Vec<u8>) -> (PathBuf, JoinHandle<Vec<u8>>) {
    let path = dir.path().join("pasta.sock");
    let listener = UnixListener::bind(&path).expect("bind the fake server");
    let handle = std::thread::spawn(move || {
        // Bounded: pesto connects at once or has failed.
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready =
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20_000u16)).expect("poll");
        assert_eq!(ready, 1, "pesto never connected");
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        conn.set_write_timeout(Some(TIMEOUT)).unwrap();
        // pesto may close early (a bad hello): what it read is its business.
        let _ = conn.write_all(&bytes);
        // Nothing more comes: a short listing ends here rather than at pesto's timeout.
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        got
    });
    (path, handle)
}

/// Hello and tables as a pasta would send them.
fn listing(tables: &[Listed]) -> Vec<u8> {
    let tables: Vec<_> = tables
        .iter()
        .map(|(pif, caps, rules)| (*pif, *caps, rules.as_slice()))
        .collect();
    let mut out = Vec::new();
    encode_listing(&tables, &mut out).unwrap();
    out
}

fn pasta_tables(host: Vec<ForwardRule>) -> Vec<Listed> {
    vec![(Pif::Host, ALL_CAPS, host), (Pif::Splice, ALL_CAPS, vec![])]
}

fn pesto(args: &[&str], path: &Path) -> Output {
    let mut cmd = Command::new(bin("pesto"));
    cmd.args(args).arg(path);
    run_timeout(&mut cmd, TIMEOUT)
}

/// Runs pesto against a server listing `tables`: its output and the bytes it sent.
fn exchange(tables: &[Listed], args: &[&str]) -> (Output, Vec<u8>) {
    let dir = TempDir::new("pesto");
    let (path, server) = serve(&dir, listing(tables));
    let out = pesto(args, &path);
    (out, server.join().expect("fake server"))
}

/// The tables an update holds, each rule printed.
fn update(bytes: &[u8]) -> Vec<(Pif, Vec<String>)> {
    let mut b = TablesBuilder::new(Stream::Update);
    assert_eq!(b.feed(bytes), Ok(true), "a complete update: {bytes:?}");
    b.into_tables()
        .into_iter()
        .map(|t| (t.pif, t.rules.iter().map(|r| r.to_string()).collect()))
        .collect()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", show(out));
    assert!(out.stderr.is_empty(), "{}", show(out));
}

fn fails_with(out: &Output, line: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{line}\n"),
        "{}",
        show(out)
    );
}

fn rule(first: u16, to: u16) -> ForwardRule {
    ForwardRule {
        to,
        ..ForwardRule::ports(sans_io::flow::Proto::Tcp, first, first)
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn lists_the_tables_and_sends_nothing() {
    let (out, sent) = exchange(&pasta_tables(vec![rule(8080, 80)]), &[]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("passt/pasta configuration (") && first.ends_with("pasta.sock)"));
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>(),
        ["  HOST", "    TCP *:8080  =>  80", "  SPLICE"]
    );
    assert!(sent.is_empty(), "list mode sends nothing: {sent:?}");

    // A rule the tables would refuse is still shown, and sent back as it was.
    let odd = ForwardRule {
        to: 0,
        ..rule(9, 9)
    };
    let (out, sent) = exchange(&pasta_tables(vec![odd]), &["-A", "-u", "53"]);
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (Pif::Host, strings(&["TCP *:9  =>  0", "UDP *:53  =>  53"]))
    );
}

#[test]
fn add_delete_clear_and_replace() {
    let (out, sent) = exchange(&pasta_tables(vec![rule(22, 22)]), &["-A", "-t", "8080:80"]);
    ok(&out);
    assert_eq!(
        update(&sent),
        [
            (
                Pif::Host,
                strings(&["TCP *:22  =>  22", "TCP *:8080  =>  80"])
            ),
            (Pif::Splice, vec![])
        ]
    );

    let (out, sent) = exchange(
        &pasta_tables(vec![rule(22, 22), rule(8080, 80)]),
        &["-D", "-t", "8080:80"],
    );
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (Pif::Host, strings(&["TCP *:22  =>  22"]))
    );

    let (out, sent) = exchange(&pasta_tables(vec![rule(22, 22)]), &["-C", "HOST"]);
    ok(&out);
    assert_eq!(update(&sent), [(Pif::Host, vec![]), (Pif::Splice, vec![])]);

    // Replace mode: the first -t empties HOST, -U only touches SPLICE.
    let (out, sent) = exchange(
        &pasta_tables(vec![rule(22, 22)]),
        &["-t", "1024", "-U", "1025"],
    );
    ok(&out);
    assert_eq!(
        update(&sent),
        [
            (Pif::Host, strings(&["TCP *:1024  =>  1024"])),
            (Pif::Splice, strings(&["UDP *%lo:1025  =>  1025"]))
        ]
    );
}

#[test]
fn show_prints_before_and_after() {
    let (out, _) = exchange(&pasta_tables(vec![]), &["-s", "-A", "-u", "53"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let titles: Vec<_> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(titles.len(), 2, "{text}");
    assert!(
        titles[0].starts_with("Previous configuration (")
            && titles[1].starts_with("Updated configuration (")
    );
    assert!(
        text.ends_with("  HOST\n    UDP *:53  =>  53\n  SPLICE\n"),
        "{text}"
    );
}

#[test]
fn podman_argument_vectors() {
    // The current client: target addresses, both families.
    let (out, sent) = exchange(
        &pasta_tables(vec![]),
        &[
            "--add",
            "-t",
            "0.0.0.0/8080:10.88.0.2/80",
            "-t",
            "[::]/8080:fd00::2/80",
        ],
    );
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (
            Pif::Host,
            strings(&[
                "TCP 0.0.0.0:8080  =>  10.88.0.2:80",
                "TCP [::]:8080  =>  [fd00::2]:80"
            ])
        )
    );
    // Ranges.
    let (out, sent) = exchange(
        &pasta_tables(vec![]),
        &["--add", "-u", "0.0.0.0/8000-8004:10.88.0.2/80-84"],
    );
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (
            Pif::Host,
            strings(&["UDP 0.0.0.0:8000-8004  =>  10.88.0.2:80-84"])
        )
    );
    // The first version: no targets, the two wildcards never conflict.
    let (out, sent) = exchange(
        &pasta_tables(vec![]),
        &["--add", "-t", "0.0.0.0/8080", "-t", "[::]/8080"],
    );
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (
            Pif::Host,
            strings(&["TCP 0.0.0.0:8080  =>  8080", "TCP [::]:8080  =>  8080"])
        )
    );
    // Teardown deletes with the same arguments.
    let added: Vec<_> = {
        let mut b = TablesBuilder::new(Stream::Update);
        b.feed(&sent).unwrap();
        b.into_tables().remove(0).rules
    };
    let (out, sent) = exchange(
        &pasta_tables(added),
        &["--delete", "-t", "0.0.0.0/8080", "-t", "[::]/8080"],
    );
    ok(&out);
    assert_eq!(update(&sent)[0], (Pif::Host, vec![]));
}

#[test]
fn rootlesskit_argument_vectors() {
    let dir = TempDir::new("pesto");
    let out = run_timeout(Command::new(bin("pesto")).arg("--version"), TIMEOUT);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pesto "),
        "{}",
        show(&out)
    );
    drop(dir);

    let (out, sent) = exchange(
        &pasta_tables(vec![]),
        &["-A", "--tcp-ports=0.0.0.0/8080:80"],
    );
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (Pif::Host, strings(&["TCP 0.0.0.0:8080  =>  80"]))
    );
    let (out, sent) = exchange(&pasta_tables(vec![]), &["-A", "--tcp-ports=::/8080:80"]);
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (Pif::Host, strings(&["TCP [::]:8080  =>  80"]))
    );

    let present = ForwardRule {
        listen: sans_io::fwd::rule::Listen::Addr("0.0.0.0".parse().unwrap()),
        ..rule(8080, 80)
    };
    let (out, sent) = exchange(
        &pasta_tables(vec![present]),
        &["-D", "--tcp-ports=0.0.0.0/8080:80"],
    );
    ok(&out);
    assert_eq!(update(&sent)[0], (Pif::Host, vec![]));
}

#[test]
fn identical_add_succeeds_and_changes_nothing_but_a_conflict_fails() {
    let (out, sent) = exchange(
        &pasta_tables(vec![rule(8080, 80)]),
        &["-A", "-t", "8080:80"],
    );
    ok(&out);
    assert_eq!(
        update(&sent)[0],
        (Pif::Host, strings(&["TCP *:8080  =>  80"]))
    );

    let (out, sent) = exchange(
        &pasta_tables(vec![rule(8080, 80)]),
        &["-A", "-t", "8000-8100"],
    );
    fails_with(
        &out,
        "Unable to add rule TCP *:8000-8100  =>  8000-8100: Forwarding configuration conflict: \
         TCP *:8000-8100  =>  8000-8100 versus TCP *:8080  =>  80",
    );
    assert!(sent.is_empty(), "nothing is sent on failure");

    let (out, _) = exchange(&pasta_tables(vec![rule(8080, 80)]), &["-D", "-t", "8080"]);
    fails_with(
        &out,
        "Unable to delete rule TCP *:8080  =>  8080: Specifier TCP *:8080  =>  8080 conflicts \
         with rule TCP *:8080  =>  80, but doesn't match it, can't delete",
    );
}

#[test]
fn connection_and_protocol_errors() {
    let dir = TempDir::new("pesto");
    let missing = dir.path().join("nobody-here.sock");
    let out = pesto(&[], &missing);
    fails_with(
        &out,
        &format!(
            "Failed to connect to {}: No such file or directory",
            missing.display()
        ),
    );

    let mut bad_magic = listing(&pasta_tables(vec![]));
    bad_magic[0] = b'B';
    let dir = TempDir::new("pesto");
    let (path, server) = serve(&dir, bad_magic);
    fails_with(&pesto(&[], &path), "Bad magic number from server");
    server.join().unwrap();

    let mut newer = listing(&pasta_tables(vec![]));
    newer[11] = 3;
    let dir = TempDir::new("pesto");
    let (path, server) = serve(&dir, newer);
    fails_with(
        &pesto(&["-A", "-t", "1"], &path),
        "Unknown server protocol version 3 > 2",
    );
    assert!(server.join().unwrap().is_empty());

    // A server that stops mid-table.
    let mut short = listing(&pasta_tables(vec![rule(1, 1)]));
    short.truncate(30);
    let dir = TempDir::new("pesto");
    let (path, server) = serve(&dir, short);
    fails_with(
        &pesto(&[], &path),
        "Error reading from control socket: the server closed the connection",
    );
    server.join().unwrap();

    // No table of that name: the C text.
    let (out, sent) = exchange(&pasta_tables(vec![]), &["-C", "TAP"]);
    fails_with(&out, "Unsupported pif name TAP");
    assert!(sent.is_empty());
}

#[test]
fn usage_errors() {
    let out = run_timeout(Command::new(bin("pesto")).arg("-h"), TIMEOUT);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Usage: pesto"));
    let out = run_timeout(&mut Command::new(bin("pesto")), TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("pesto: missing socket PATH\nUsage: pesto"));
}

/// The man page documents every option `pesto --help` lists, and nothing else.
#[test]
fn man_page_documents_every_option() {
    let out = run_timeout(Command::new(bin("pesto")).arg("--help"), TIMEOUT);
    ok(&out);
    // The option lines only, not the description's mention of pasta's --conf-path.
    let help: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .map(|l| l.to_owned() + "\n")
        .collect();
    let long_options = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| c.is_whitespace() || c == ',' || c == '"')
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(str::to_owned)
            .collect()
    };
    let page = include_str!("../../man/pesto.1");
    let options = page
        .split(".SH OPTIONS")
        .nth(1)
        .and_then(|s| s.split("\n.SH ").next())
        .expect("an OPTIONS section");
    let tags: String = options
        .lines()
        .zip(options.lines().skip(1))
        .filter(|(prev, _)| prev.trim() == ".TP")
        .map(|(_, tag)| tag.replace("\\-", "-") + "\n")
        .collect();
    assert_eq!(long_options(&help), long_options(&tags), "{help}\n{tags}");
}
