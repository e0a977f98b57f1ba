//! Real OS: passt and pasta read the host's configuration from a namespace the test built, and
//! their start-up summary shows exactly its addresses, routes, resolvers and MAC.

mod common;

use std::os::fd::AsRawFd;

use common::{addr, bin, inherit_as_fd5, run_timeout, test_user, Lab, Shape, TestUser, TIMEOUT};

/// Runs a binary in the lab's host namespace and returns its standard error. passt gets a
/// guest socket whose other end is already closed (`-F`), so it ends right after starting.
fn summary(lab: &Lab, user: Option<&TestUser>, program: &str, args: &[&str]) -> String {
    let mut args = args.to_vec();
    let pair = (program == "passt").then(|| std::os::unix::net::UnixStream::pair().unwrap());
    if pair.is_some() {
        args.extend(["-F", "5"]);
    }
    let mut cmd = lab.host_command(user, &bin(program), &args);
    if let Some((ours, theirs)) = pair {
        drop(ours);
        inherit_as_fd5(&mut cmd, theirs.as_raw_fd());
        let out = run_timeout(&mut cmd, TIMEOUT);
        drop(theirs);
        return check(out);
    }
    check(run_timeout(&mut cmd, TIMEOUT))
}

fn check(out: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn assert_lines(text: &str, expected: &[String]) {
    for line in expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }
}

fn dual_stack_lines(program: &str) -> Vec<String> {
    let mut lines = vec![
        "Host interface: veth0".to_owned(),
        format!("Our MAC address: {}", addr::HOST_MAC),
        "MTU: 65520".to_owned(),
        format!("IPv4 address: {}/{} (via DHCP)", addr::HOST4, addr::PREFIX4),
        format!("IPv4 gateway: {}", addr::REMOTE4),
        format!(
            "IPv6 address: {}/{} (via NDP, DHCPv6)",
            addr::HOST6,
            addr::PREFIX6
        ),
        format!("IPv6 gateway: {}", addr::REMOTE6),
    ];
    if program == "pasta" {
        lines.push("Namespace interface: veth0".to_owned());
        lines.push(format!(
            "DNS: {}, {} (not handed out)",
            addr::DNS4,
            addr::DNS6
        ));
        lines.push(format!("DNS search: {} (not handed out)", addr::SEARCH));
    } else {
        lines.push(format!("DNS: {}, {}", addr::DNS4, addr::DNS6));
        lines.push(format!("DNS search: {}", addr::SEARCH));
    }
    lines
}

#[test]
fn dual_stack_host_as_root_and_unprivileged() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let user = test_user();
    for program in ["passt", "pasta"] {
        for who in [None, Some(&user)] {
            let text = summary(&lab, who, program, &["-f"]);
            assert_lines(&text, &dual_stack_lines(program));
            assert!(!text.contains("warning"), "{program} as {who:?}: {text}");
        }
    }
}

#[test]
fn ipv4_only_host() {
    let Some(lab) = Lab::new(Shape::Ipv4Only) else {
        return;
    };
    let text = summary(&lab, None, "passt", &["-f"]);
    assert_lines(
        &text,
        &[
            format!("IPv4 address: {}/{} (via DHCP)", addr::HOST4, addr::PREFIX4),
            "IPv6: disabled".to_owned(),
        ],
    );
    assert!(text.contains("warning: IPv6 disabled"), "{text}");
}

#[test]
fn ipv6_only_host() {
    let Some(lab) = Lab::new(Shape::Ipv6Only) else {
        return;
    };
    let text = summary(&lab, None, "pasta", &["-f"]);
    assert_lines(
        &text,
        &[
            "IPv4: disabled".to_owned(),
            format!("IPv6 gateway: {}", addr::REMOTE6),
        ],
    );
}

#[test]
fn offline_host_starts_in_local_mode() {
    let Some(lab) = Lab::new(Shape::Offline) else {
        return;
    };
    let text = summary(&lab, Some(&test_user()), "pasta", &["-f"]);
    assert_lines(
        &text,
        &[
            "Host interface: none (local mode)".to_owned(),
            "Namespace interface: tap0".to_owned(),
            "IPv4 address: 169.254.2.1/16 (via DHCP)".to_owned(),
            "IPv4 gateway: 169.254.2.2".to_owned(),
            "IPv6 gateway: fe80::1".to_owned(),
        ],
    );
    assert!(text.contains("warning: no usable host interface"), "{text}");
}

#[test]
fn options_override_what_was_discovered() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let text = summary(
        &lab,
        None,
        "pasta",
        &[
            "-f",
            "-a",
            "10.0.2.100",
            "-n",
            "24",
            "-g",
            "10.0.2.2",
            "-M",
            "02:aa:bb:cc:dd:ee",
            "-m",
            "1500",
            "-D",
            "192.0.2.53",
            "-S",
            "example.test",
            "--dhcp-dns",
            "-I",
            "eth7",
        ],
    );
    assert_lines(
        &text,
        &[
            "Namespace interface: eth7".to_owned(),
            "Our MAC address: 02:aa:bb:cc:dd:ee".to_owned(),
            "MTU: 1500".to_owned(),
            "IPv4 address: 10.0.2.100/24 (via DHCP)".to_owned(),
            "IPv4 gateway: 10.0.2.2".to_owned(),
            "DNS: 192.0.2.53".to_owned(),
            "DNS search: example.test (not handed out)".to_owned(),
        ],
    );
}

#[test]
fn quiet_prints_no_summary() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let text = summary(&lab, None, "passt", &["-f", "-q"]);
    assert!(!text.contains("IPv4 address"), "{text}");
}

#[test]
fn bad_options_fail_with_one_line() {
    let Some(lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    for (program, args, expected) in [
        ("pasta", vec!["--foo"], "pasta: unrecognized option '--foo'"),
        (
            "passt",
            vec!["-m", "70000"],
            "passt: invalid value '70000' for --mtu: must be 0 or between 68 and 65520",
        ),
        (
            "pasta",
            vec!["-i", "nope0"],
            "pasta: --interface: no interface named 'nope0' on the host",
        ),
    ] {
        let out = lab.run(None, &bin(program), &args);
        assert_eq!(out.status.code(), Some(1), "{program} {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end(), expected);
    }
}
