//! Real OS: the loopback bypass (`-T`, `-U`). Inside pasta's namespace, connections to its
//! loopback reach the host's loopback servers, byte-exact, for explicit `-T` ports (with a
//! different host port) and for the default `-T auto`, which follows the host's listening
//! sockets; a port with no server behind it is reset at once; datagrams to a `-U` port reach
//! the host's UDP server and its answers come back from the port written to. As root and as
//! an ordinary user.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{
    bin, random_file, require, run_timeout, sha256_file, test_user, wait_for_file, Lab, Need,
    Shape, TempDir, TestUser, FILE_SERVER_PY, UDP_CLIENT_PY, UDP_ECHO_PY,
};

const HOST_PORT: u16 = 9300;
const NS_PORT: u16 = 9301;
const DEAD_PORT: u16 = 9302;
const UDP_HOST_PORT: u16 = 9310;
const UDP_NS_PORT: u16 = 9311;
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn namespace_loopback_reaches_host_loopback_servers() {
    if !require(&[
        Need::TunForOthers, // Also run as the test user.
        Need::Tool("python3"),
        Need::Tool("curl"),
        Need::Tool("sha256sum"),
    ]) {
        return;
    }
    let Some(mut lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let dir = TempDir::new("splice");
    let sha = random_file(&dir.path().join("blob"), 10 << 20);
    assert_eq!(sha, sha256_file(&dir.path().join("blob")));
    std::fs::write(dir.path().join("server.py"), FILE_SERVER_PY).unwrap();
    std::fs::write(dir.path().join("echo.py"), UDP_ECHO_PY).unwrap();
    std::fs::write(dir.path().join("client.py"), UDP_CLIENT_PY).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The host's server, on its loopback (and everywhere: [::] with IPv4 too).
    let ready = dir.path().join("ready");
    let mut server = std::process::Command::new("ip");
    server
        .args(["netns", "exec", &lab.host, "python3"])
        .args([
            dir.path().join("server.py").to_str().unwrap(),
            dir.path().to_str().unwrap(),
            &HOST_PORT.to_string(),
            ready.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn(server);
    assert!(wait_for_file(&ready, Duration::from_secs(10)));
    let udp_ready = dir.path().join("udp-ready");
    let mut echo = std::process::Command::new("ip");
    echo.args(["netns", "exec", &lab.host, "python3"])
        .args([
            dir.path().join("echo.py").to_str().unwrap(),
            udp_ready.to_str().unwrap(),
            &format!("127.0.0.1,{UDP_HOST_PORT}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn(echo);
    assert!(wait_for_file(&udp_ready, Duration::from_secs(10)));

    let user = test_user();
    for who in [None, Some(&user)] {
        check(&lab, who, &sha);
        check_udp(&lab, who, dir.path());
    }
}

fn check(lab: &Lab, who: Option<&TestUser>, sha: &str) {
    let name = who.map(|u| u.name.clone()).unwrap_or("root".into());
    let fetch = |url: &str| format!("curl -sS --max-time 20 {url} | sha256sum | cut -d' ' -f1");
    // Explicit -T with another host port; -T auto (the default) for the host's own port.
    let script = format!(
        "{}; {}; {}; curl -sS --max-time 5 http://127.0.0.1:{DEAD_PORT}/ >/dev/null 2>&1; \
         echo dead=$?",
        fetch(&format!("http://127.0.0.1:{NS_PORT}/blob")),
        fetch(&format!("'http://[::1]:{NS_PORT}/blob'")),
        fetch(&format!("http://127.0.0.1:{HOST_PORT}/blob")),
    );
    let spec = format!("{NS_PORT}:{HOST_PORT}");
    let dead = format!("{DEAD_PORT}:{}", DEAD_PORT + 50);
    let explicit = [
        "--config-net",
        "-T",
        &spec,
        "-T",
        &dead,
        "--",
        "sh",
        "-c",
        &script,
    ];
    let out = run_timeout(
        &mut lab.host_command(who, &bin("pasta"), &explicit),
        RUN_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // The third fetch needs -T auto, which explicit -T replaces: it must fail here.
    assert_eq!(
        lines.first().copied(),
        Some(sha),
        "IPv4 ({name}): {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines.get(1).copied(), Some(sha), "IPv6 ({name}): {stdout}");
    assert_ne!(
        lines.get(2).copied(),
        Some(sha),
        "not forwarded without auto ({name})"
    );
    // curl's 7 (refused) or 56 (reset): quick either way, not a timeout (28).
    let dead_rc = lines.get(3).copied().unwrap_or("");
    assert!(
        dead_rc == "dead=56" || dead_rc == "dead=7",
        "no server behind the port ({name}): {stdout}"
    );

    // Defaults: -T auto finds the host's server on its own port.
    let auto = fetch(&format!("http://127.0.0.1:{HOST_PORT}/blob"));
    let out = run_timeout(
        &mut lab.host_command(
            who,
            &bin("pasta"),
            &["--config-net", "--", "sh", "-c", &auto],
        ),
        RUN_TIMEOUT,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sha,
        "-T auto ({name}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_udp(lab: &Lab, who: Option<&TestUser>, dir: &std::path::Path) {
    let name = who.map(|u| u.name.clone()).unwrap_or("root".into());
    let spec = format!("{UDP_NS_PORT}:{UDP_HOST_PORT}");
    let client = format!(
        "python3 {} 127.0.0.1,{UDP_NS_PORT}",
        dir.join("client.py").display()
    );
    let args = ["--config-net", "-U", &spec, "--", "sh", "-c", &client];
    let out = run_timeout(
        &mut lab.host_command(who, &bin("pasta"), &args),
        RUN_TIMEOUT,
    );
    let want = format!("OK 127.0.0.1,{UDP_NS_PORT} 127.0.0.1 same port={UDP_NS_PORT}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&want),
        "-U ({name}): {}",
        common::show(&out)
    );
}
