use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use proptest::prelude::*;
use sans_io::config::{AddrChoice, Family, ListChoice, Mode};
use sans_io::fwd::ForwardMode;

use super::*;

fn args(line: &[&str]) -> Vec<OsString> {
    line.iter().map(OsString::from).collect()
}

fn run(mode: Mode, line: &[&str]) -> Cli {
    match parse(mode, &args(line)) {
        Ok(Parsed::Run(cli)) => *cli,
        other => panic!("{line:?}: {other:?}"),
    }
}

fn pasta(line: &[&str]) -> Cli {
    let mut full = vec!["pasta"];
    full.extend_from_slice(line);
    run(Mode::Pasta, &full)
}

fn passt(line: &[&str]) -> Cli {
    let mut full = vec!["passt"];
    full.extend_from_slice(line);
    run(Mode::Passt, &full)
}

fn error(mode: Mode, line: &[&str]) -> String {
    let mut full = vec![mode.name()];
    full.extend_from_slice(line);
    match parse(mode, &args(&full)) {
        Err(e) => e.to_string(),
        other => panic!("{line:?} parsed: {other:?}"),
    }
}

/// Each command line fails with exactly its message.
fn assert_errors(cases: &[(Mode, &[&str], &str)]) {
    for &(mode, line, expected) in cases {
        assert_eq!(error(mode, line), expected, "{mode:?} {line:?}");
    }
}

#[test]
fn mode_follows_the_program_name() {
    assert_eq!(mode_from_argv0("pasta".as_ref()), Mode::Pasta);
    assert_eq!(mode_from_argv0("/usr/bin/pasta.avx2".as_ref()), Mode::Pasta);
    assert_eq!(
        mode_from_argv0("/usr/local/bin/passt".as_ref()),
        Mode::Passt
    );
    assert_eq!(
        mode_from_argv0("./target/debug/pasta".as_ref()),
        Mode::Pasta
    );
    assert_eq!(mode_from_argv0("something-else".as_ref()), Mode::Passt);
}

#[test]
fn podman_command_line() {
    // What Podman 5 runs for `podman run -p 8080:80 -p 5353:53/udp`.
    let cli = pasta(&[
        "--config-net",
        "-t",
        "8080-8080:80-80",
        "-u",
        "5353-5353:53-53",
        "--dns-forward",
        "169.254.1.1",
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
        "--quiet",
        "--netns",
        "/run/user/1000/netns/netns-1234",
        "--map-guest-addr",
        "169.254.1.2",
    ]);
    assert!(cli.config_net && cli.log.quiet && cli.netns_only);
    assert_eq!(
        cli.target,
        PastaTarget::Netns("/run/user/1000/netns/netns-1234".into())
    );
    assert_eq!(cli.net.dns_forward4, Some(Ipv4Addr::new(169, 254, 1, 1)));
    assert_eq!(
        cli.net.map_guest_addr4,
        AddrChoice::Addr(Ipv4Addr::new(169, 254, 1, 2))
    );
    assert_eq!(cli.net.map_host_loopback4, AddrChoice::Disabled);
    assert_eq!(cli.net.map_host_loopback6, AddrChoice::Disabled);
    assert_eq!(cli.net.tcp_out, ForwardMode::None);
    assert_eq!(cli.net.udp_out, ForwardMode::None);
    let ForwardMode::Ports(tcp) = &cli.net.tcp_in else {
        panic!("{:?}", cli.net.tcp_in)
    };
    assert_eq!(tcp.len(), 1);
    assert!(matches!(cli.net.udp_in, ForwardMode::Ports(_)));
}

#[test]
fn forwards_to_a_target_address() {
    // Podman's form: a container's address and port behind a host port.
    let cli = pasta(&["-t", "0.0.0.0/8080:10.88.0.2/80", "-u", "53:[fd00::2]"]);
    let ForwardMode::Ports(tcp) = &cli.net.tcp_in else {
        panic!("{:?}", cli.net.tcp_in)
    };
    let PortItem::Forward(map) = tcp[0].items[0] else {
        panic!("{:?}", tcp[0])
    };
    assert_eq!(map.to_addr, Some("10.88.0.2".parse().unwrap()));
    assert_eq!((map.from.first, map.to_first), (8080, 80));
    let ForwardMode::Ports(udp) = &cli.net.udp_in else {
        panic!("{:?}", cli.net.udp_in)
    };
    let PortItem::Forward(map) = udp[0].items[0] else {
        panic!("{:?}", udp[0])
    };
    assert_eq!(map.to_addr, Some("fd00::2".parse().unwrap()));
}

#[test]
fn newer_listen_address_forms() {
    // Brackets, `*` for both families, and the single-family wildcards.
    let cli = pasta(&["-t", "[::]/8080", "-t", "*/9090", "-u", "[127.0.0.1]/53"]);
    let ForwardMode::Ports(tcp) = &cli.net.tcp_in else {
        panic!("{:?}", cli.net.tcp_in)
    };
    assert_eq!(tcp[0].bind, Some(Ipv6Addr::UNSPECIFIED.into()));
    assert_eq!(tcp[1].bind, None);
    let ForwardMode::Ports(udp) = &cli.net.udp_in else {
        panic!("{:?}", cli.net.udp_in)
    };
    assert_eq!(udp[0].bind, Some(Ipv4Addr::LOCALHOST.into()));
}

#[test]
fn podman_option_order_does_not_matter() {
    // Podman emits -t and -u in either order, and puts the user's own options first.
    let tail = [
        "--dns-forward",
        "169.254.1.1",
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
        "--quiet",
        "--netns",
        "/run/user/1000/netns/netns-1",
        "--map-guest-addr",
        "169.254.1.2",
    ];
    let with = |head: &[&'static str]| {
        let mut args = vec!["--config-net"];
        args.extend_from_slice(head);
        args.extend_from_slice(&tail);
        pasta(&args)
    };
    let a = with(&["-t", "8080-8080:80-80", "-u", "7070-7070:7070-7070"]);
    let b = with(&["-u", "7070-7070:7070-7070", "-t", "8080-8080:80-80"]);
    assert_eq!(a.net, b.net);
    assert_eq!(a.target, b.target);
    // `--network pasta:-t,9090:80,-m,1400`: the user's options, then Podman's defaults for
    // what the user didn't give.
    let c = with(&["-t", "9090:80", "-m", "1400", "-u", "none"]);
    assert_eq!(c.net.mtu, Some(1400));
    assert_eq!(c.net.udp_in, ForwardMode::None);
    assert!(matches!(c.net.tcp_in, ForwardMode::Ports(_)));
}

#[test]
fn rootlesskit_command_line() {
    // RootlessKit uses --opt=value and the deprecated --stderr.
    let cli = pasta(&[
        "--stderr",
        "--ns-ifname=tap0",
        "--mtu=65520",
        "--config-net",
        "--address=10.0.2.100",
        "--netmask=24",
        "--gateway=10.0.2.2",
        "--dns-forward=10.0.2.3",
        "--no-map-gw",
        "--ipv4-only",
        "--tcp-ports=auto",
        "--udp-ports=auto",
        "4242",
    ]);
    assert_eq!(cli.target, PastaTarget::Pid(4242));
    assert_eq!(cli.net.ns_ifname.as_deref(), Some("tap0"));
    assert_eq!(cli.net.mtu, Some(65520));
    assert_eq!(cli.net.addr4, Some(Ipv4Addr::new(10, 0, 2, 100)));
    assert_eq!(cli.net.prefix_len4, Some(24));
    assert_eq!(cli.net.gateway4, Some(Ipv4Addr::new(10, 0, 2, 2)));
    assert_eq!(cli.net.family, Family::V4Only);
    assert_eq!(cli.net.tcp_in, ForwardMode::Auto);
}

#[test]
fn rootlesskit_userns_and_netns_paths() {
    let cli = pasta(&[
        "--userns=/proc/42/ns/user",
        "--netns=/proc/42/ns/net",
        "--config-net",
    ]);
    assert_eq!(cli.target, PastaTarget::Netns("/proc/42/ns/net".into()));
    assert_eq!(cli.userns, Some(PathBuf::from("/proc/42/ns/user")));
    assert!(!cli.netns_only, "--userns given: join it too");
}

#[test]
fn libvirt_command_line() {
    let cli = passt(&[
        "--one-off",
        "--socket",
        "/run/libvirt/qemu/passt/1-vm-net0.socket",
        "--pid",
        "/run/libvirt/qemu/passt/1-vm-net0.pid",
        "--mtu",
        "1500",
        "--interface",
        "eth0",
        "--address",
        "192.0.2.10",
        "--netmask",
        "24",
        "--tcp-ports",
        "198.51.100.1%eth0/2222:22",
        "--udp-ports",
        "~53",
        "--hostname",
        "vm1",
        "--fqdn",
        "vm1.example.com",
    ]);
    assert!(cli.one_off);
    assert_eq!(
        cli.socket_path,
        Some(PathBuf::from("/run/libvirt/qemu/passt/1-vm-net0.socket"))
    );
    assert_eq!(cli.net.interface.as_deref(), Some("eth0"));
    assert_eq!(cli.net.hostname.as_deref(), Some("vm1"));
}

#[test]
fn socket_path_alias() {
    let cli = passt(&["--socket-path", "/tmp/x.sock"]);
    assert_eq!(cli.socket_path, Some(PathBuf::from("/tmp/x.sock")));
    let cli = passt(&["-s/tmp/y.sock"]);
    assert_eq!(cli.socket_path, Some(PathBuf::from("/tmp/y.sock")));
}

#[test]
fn option_parsing_stops_at_the_command() {
    let cli = pasta(&["-f", "--config-net", "ip", "-j", "addr", "--mtu", "3"]);
    assert_eq!(
        cli.target,
        PastaTarget::Spawn(args(&["ip", "-j", "addr", "--mtu", "3"]))
    );
    assert_eq!(cli.net.mtu, None);
    let cli = pasta(&["--", "sh", "-c", "exit 3"]);
    assert_eq!(
        cli.target,
        PastaTarget::Spawn(args(&["sh", "-c", "exit 3"]))
    );
    let cli = pasta(&[]);
    assert_eq!(cli.target, PastaTarget::Spawn(vec![]));
}

#[test]
fn a_lone_number_is_a_pid() {
    assert_eq!(pasta(&["-q", "1234"]).target, PastaTarget::Pid(1234));
    // With arguments, a number is a command name like any other.
    assert_eq!(
        pasta(&["1234", "x"]).target,
        PastaTarget::Spawn(args(&["1234", "x"]))
    );
    assert!(error(Mode::Pasta, &["0"]).contains("not a valid PID"));
}

#[test]
fn netns_names_live_in_run_netns() {
    assert_eq!(
        pasta(&["--netns", "lab"]).target,
        PastaTarget::Netns("/run/netns/lab".into())
    );
    assert_eq!(
        pasta(&["--netns", "./lab"]).target,
        PastaTarget::Netns("./lab".into())
    );
    assert!(error(Mode::Pasta, &["--netns", "lab", "1234"]).contains("--netns"));
}

#[test]
fn unknown_options_read_like_getopt() {
    assert_errors(&[
        (Mode::Pasta, &["--foo"], "unrecognized option '--foo'"),
        (
            Mode::Pasta,
            &["--map-guest-addr", "169.254.1.2", "--no-such=1"],
            "unrecognized option '--no-such=1'",
        ),
        (Mode::Passt, &["-x"], "invalid option -- 'x'"),
        (Mode::Passt, &["-4x"], "invalid option -- 'x'"),
    ]);
}

#[test]
fn missing_values_read_like_getopt() {
    assert_errors(&[
        (
            Mode::Passt,
            &["--mtu"],
            "option '--mtu' requires an argument",
        ),
        (Mode::Passt, &["-m"], "option requires an argument -- 'm'"),
    ]);
}

#[test]
fn long_options_may_be_abbreviated() {
    assert!(pasta(&["--config", "--quiet"]).config_net);
    assert_eq!(passt(&["--mt", "9000"]).net.mtu, Some(9000));
}

#[test]
fn values_may_start_with_a_dash() {
    let cli = passt(&["-l", "-weird-name"]);
    assert_eq!(cli.log.file, Some(PathBuf::from("-weird-name")));
}

#[test]
fn stderr_is_a_no_op() {
    let with = pasta(&["-e", "-q"]);
    let without = pasta(&["-q"]);
    assert_eq!(with, without);
}

#[test]
fn bundled_short_flags() {
    let cli = passt(&["-4fq"]);
    assert_eq!(cli.net.family, Family::V4Only);
    assert!(cli.foreground && cli.log.quiet);
}

#[test]
fn last_one_wins_for_single_options() {
    assert_eq!(passt(&["-m", "1500", "-m", "9000"]).net.mtu, Some(9000));
}

#[test]
fn addresses_once_per_family() {
    let cli = passt(&[
        "-a",
        "192.0.2.2",
        "-a",
        "2001:db8::2",
        "-g",
        "192.0.2.1",
        "-g",
        "fe80::1",
    ]);
    assert_eq!(cli.net.addr4, Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(
        cli.net.addr6,
        Some("2001:db8::2".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(
        cli.net.gateway6,
        Some("fe80::1".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(
        error(Mode::Passt, &["-a", "192.0.2.2", "-a", "192.0.2.3"]),
        "invalid value '192.0.2.3' for --address: given twice for the same IP version"
    );
}

#[test]
fn bad_values_name_option_and_value() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-a", "192.0.2.300"],
            "invalid value '192.0.2.300' for --address: not an IPv4 or IPv6 address",
        ),
        (
            &["-a", "224.0.0.1"],
            "invalid value '224.0.0.1' for --address: not a usable unicast address",
        ),
        (
            &["-n", "255.0.255.0"],
            "invalid value '255.0.255.0' for --netmask: netmask bits are not contiguous",
        ),
        (
            &["-n", "33"],
            "invalid value '33' for --netmask: prefix length must be 0 to 32",
        ),
        (
            &["-M", "00:11:22:33:44"],
            "invalid value '00:11:22:33:44' for --mac-addr: not a MAC address",
        ),
        (
            &["-M", "01:00:5e:00:00:01"],
            "invalid value '01:00:5e:00:00:01' for --mac-addr: not a unicast MAC address",
        ),
        (
            &["-m", "65521"],
            "invalid value '65521' for --mtu: must be 0 or between 68 and 65520",
        ),
        (
            &["-m", "67"],
            "invalid value '67' for --mtu: must be 0 or between 68 and 65520",
        ),
        (
            &["-m", "big"],
            "invalid value 'big' for --mtu: not a number",
        ),
        (&["-t", "80-22"], "invalid value '80-22' for --tcp-ports"),
        (
            &["-t", "auto"],
            "invalid value 'auto' for --tcp-ports: 'auto' forwarding is for pasta only",
        ),
        (
            &["-t", "127.0.0.1/all"],
            "invalid value '127.0.0.1/all' for --tcp-ports: 'auto' or 'all' inside a port list is not supported yet",
        ),
        (
            &["-i", "a/b"],
            "invalid value 'a/b' for --interface: not an interface name",
        ),
        (
            &["--log-size", "10"],
            "invalid value '10' for --log-size: must be at least",
        ),
        (
            &["-F", "1"],
            "invalid value '1' for --fd: not a file descriptor number above 2",
        ),
        (&["--runas", "a:b:c"], "invalid value 'a:b:c' for --runas"),
        (
            &["-H", "bad host"],
            "invalid value 'bad host' for --hostname",
        ),
    ];
    for (line, expected) in cases {
        let e = error(Mode::Passt, line);
        assert!(e.starts_with(expected), "{line:?}: {e}");
    }
}

#[test]
fn conflicting_options() {
    assert_eq!(
        error(Mode::Passt, &["-4", "-6"]),
        "--ipv4-only and --ipv6-only cannot be used together"
    );
    assert_eq!(
        error(Mode::Pasta, &["-T", "80,443", "-T", "none"]),
        "invalid value 'none' for --tcp-ns: port forwarding mode 'none' conflicts with previous mode"
    );
    assert!(error(Mode::Pasta, &["-t", "none", "-t", "22"])
        .contains("cannot be given together with 'none'"));
    assert!(error(Mode::Pasta, &["-D", "none", "-D", "192.0.2.1"]).contains("--dns none"));
    assert!(error(Mode::Pasta, &["--no-copy-routes"]).contains("--config-net"));
    assert!(error(Mode::Passt, &["-F", "5", "-s", "/tmp/s"]).contains("--fd and --socket"));
}

#[test]
fn options_of_the_other_mode_are_refused() {
    assert_errors(&[
        (
            Mode::Passt,
            &["--netns", "x"],
            "--netns is an option of pasta only",
        ),
        (
            Mode::Passt,
            &["-T", "22"],
            "--tcp-ns is an option of pasta only",
        ),
        (
            Mode::Pasta,
            &["--one-off"],
            "--one-off is an option of passt only",
        ),
        (
            Mode::Pasta,
            &["--no-dhcp-dns"],
            "--no-dhcp-dns is an option of passt only",
        ),
        (
            Mode::Passt,
            &["--dhcp-search"],
            "--dhcp-search is an option of pasta only",
        ),
    ]);
}

#[test]
fn passt_takes_no_positional_arguments() {
    let e = error(Mode::Passt, &["stray"]);
    assert!(e.contains("stray"), "{e}");
}

#[test]
fn dns_and_search_lists() {
    let cli = pasta(&[
        "-D",
        "192.0.2.53",
        "-D",
        "2001:db8::53",
        "-S",
        "a.test b.test.",
        "-S",
        "c.test",
    ]);
    assert_eq!(
        cli.net.dns,
        ListChoice::List(vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap()
        ])
    );
    assert_eq!(
        cli.net.search,
        ListChoice::List(vec!["a.test".into(), "b.test".into(), "c.test".into()])
    );
    assert_eq!(
        pasta(&["-D", "none", "-S", "none"]).net.dns,
        ListChoice::Disabled
    );
    // "none." is a domain called "none".
    assert_eq!(
        pasta(&["-S", "none."]).net.search,
        ListChoice::List(vec!["none".into()])
    );
}

#[test]
fn dhcp_dns_flags_per_mode() {
    assert_eq!(pasta(&["--dhcp-dns"]).net.dhcp_dns, Some(true));
    assert_eq!(pasta(&[]).net.dhcp_dns, None);
    assert_eq!(
        passt(&["--no-dhcp-dns", "--no-dhcp-search"])
            .net
            .dhcp_search,
        Some(false)
    );
}

#[test]
fn fd_implies_one_off() {
    let cli = passt(&["-F", "5"]);
    assert_eq!(cli.fd, Some(5));
    assert!(cli.one_off);
}

#[test]
fn trace_implies_debug() {
    let cli = passt(&["--trace"]);
    assert!(cli.log.debug && cli.log.trace);
}

#[test]
fn help_and_version() {
    for mode in [Mode::Passt, Mode::Pasta] {
        let Ok(Parsed::Help(text)) = parse(mode, &args(&[mode.name(), "--help"])) else {
            panic!()
        };
        assert!(text.contains("--mtu"));
        let Ok(Parsed::Version(v)) = parse(mode, &args(&[mode.name(), "--version"])) else {
            panic!()
        };
        assert!(v.starts_with(mode.name()));
    }
    let Ok(Parsed::Help(pasta_help)) = parse(Mode::Pasta, &args(&["pasta", "-h"])) else {
        panic!()
    };
    assert!(pasta_help.contains("--netns") && !pasta_help.contains("--one-off"));
    let Ok(Parsed::Help(passt_help)) = parse(Mode::Passt, &args(&["passt", "-h"])) else {
        panic!()
    };
    assert!(passt_help.contains("--one-off") && !passt_help.contains("--netns"));
}

#[test]
fn option_table_is_consistent() {
    let mut longs = long_options(None);
    let n = longs.len();
    longs.sort();
    longs.dedup();
    assert_eq!(longs.len(), n, "duplicate long option");
    let mut shorts: Vec<char> = options::OPTIONS.iter().filter_map(|d| d.short).collect();
    let n = shorts.len();
    shorts.sort();
    shorts.dedup();
    assert_eq!(shorts.len(), n, "duplicate short option");
    options::command(Mode::Passt).debug_assert();
    options::command(Mode::Pasta).debug_assert();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the words, parsing ends in a value or an error, never a panic.
    #[test]
    fn arbitrary_command_lines_never_panic(
        words in proptest::collection::vec(
            prop_oneof![
                "[-a-zA-Z0-9=:/.%~,]{0,12}",
                "--[a-z-]{1,16}(=[a-z0-9.:]{0,8})?",
                "-[a-zA-Z0-9]{1,3}",
            ],
            0..8,
        ),
        pasta_mode in any::<bool>(),
    ) {
        let mode = if pasta_mode { Mode::Pasta } else { Mode::Passt };
        let mut line = vec![OsString::from(mode.name())];
        line.extend(words.iter().map(OsString::from));
        let _ = parse(mode, &line);
    }
}

#[test]
fn vhost_user_is_a_passt_mode_with_its_socket_options() {
    let cli = passt(&["--vhost-user", "-s", "/tmp/vu.sock", "-1"]);
    assert!(cli.vhost_user);
    assert_eq!(cli.socket_path, Some(PathBuf::from("/tmp/vu.sock")));
    assert!(cli.one_off);
    assert!(!passt(&[]).vhost_user);
    assert_eq!(
        error(Mode::Pasta, &["--vhost-user"]),
        "--vhost-user is an option of passt only"
    );
}

#[test]
fn print_capabilities_says_net_with_or_without_vhost_user() {
    for line in [
        &["passt", "--print-capabilities"][..],
        &["passt", "--vhost-user", "--print-capabilities"][..],
    ] {
        match parse(Mode::Passt, &args(line)) {
            Ok(Parsed::Capabilities(text)) => {
                assert_eq!(text, "{\n  \"type\": \"net\"\n}\n");
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }
    assert_eq!(
        error(Mode::Pasta, &["--print-capabilities"]),
        "--print-capabilities is an option of passt only"
    );
}
