//! Real OS: pasta's default `auto` forwarding. With no -t/-u, servers started inside the
//! namespace become reachable on the same ports of the host within about a second (TCP and
//! UDP, from the remote and from the host's loopback), and the host ports are let go once the
//! servers inside stop. As root and as an ordinary user.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    addr, bin, require, run_timeout, test_user, wait_for_file, wait_until, Lab, Need, Shape,
    TempDir, TestUser, FILE_SERVER_PY, UDP_CLIENT_PY, UDP_ECHO_PY,
};

const TCP_PORT: u16 = 8123;
const UDP_PORT: u16 = 8124;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// A scan every second: a change shows within this.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether something listens on `port` of the lab host (`ss` with `flags`, `-Htln`/`-Huln`).
fn host_listens(lab: &Lab, flags: &str, port: u16) -> bool {
    let out = run_timeout(
        Command::new("ip").args([
            "netns",
            "exec",
            &lab.host,
            "ss",
            flags,
            &format!("sport = :{port}"),
        ]),
        RUN_TIMEOUT,
    );
    !out.stdout.is_empty()
}

#[test]
fn servers_inside_are_forwarded_while_they_run() {
    if !require(&[
        Need::TunForOthers, // Also run as the test user.
        Need::Tool("python3"),
        Need::Tool("curl"),
        Need::Tool("ss"),
    ]) {
        return;
    }
    let Some(mut lab) = Lab::new(Shape::DualStack) else {
        return;
    };
    let user = test_user();
    for (run, who) in [None, Some(&user)].into_iter().enumerate() {
        follow_servers(&mut lab, run, who);
    }
}

fn follow_servers(lab: &mut Lab, run: usize, who: Option<&TestUser>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(&format!("auto-{run}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let token = format!("auto-token-{run}");
    std::fs::write(dir.path().join("token"), &token).unwrap();
    std::fs::write(p("server.py"), FILE_SERVER_PY).unwrap();
    std::fs::write(p("echo.py"), UDP_ECHO_PY).unwrap();
    std::fs::write(p("client.py"), UDP_CLIENT_PY).unwrap();
    let inside = format!(
        "python3 {server} {dir} {TCP_PORT} {http_ready} & s=$!; \
         python3 {echo} {udp_ready} ::,{UDP_PORT} & u=$!; \
         while [ ! -e {stop} ]; do sleep 0.05; done; kill $s $u; wait; \
         while [ ! -e {end} ]; do sleep 0.05; done",
        server = p("server.py"),
        dir = dir.path().display(),
        http_ready = p("http-ready"),
        echo = p("echo.py"),
        udp_ready = p("udp-ready"),
        stop = p("stop"),
        end = p("end"),
    );
    // No -t or -u: pasta's defaults are `auto`.
    let args = ["--config-net", "--", "sh", "-c", &inside];
    let mut cmd = lab.host_command(who, &bin("pasta"), &args);
    cmd.stdout(Stdio::null());
    let pid = lab.spawn_graceful(cmd);
    let name = who.map(|u| u.name.clone()).unwrap_or("root".into());
    assert!(
        wait_for_file(&dir.path().join("http-ready"), READY_TIMEOUT)
            && wait_for_file(&dir.path().join("udp-ready"), READY_TIMEOUT),
        "servers inside didn't start ({name})"
    );
    assert!(
        wait_until(FOLLOW_TIMEOUT, || host_listens(lab, "-Htln", TCP_PORT)
            && host_listens(lab, "-Huln", UDP_PORT)),
        "pasta didn't start listening on the host ({name})"
    );
    for (ns, url) in [
        (
            &lab.remote,
            format!("http://{}:{TCP_PORT}/token", addr::HOST4),
        ),
        (
            &lab.remote,
            format!("http://[{}]:{TCP_PORT}/token", addr::HOST6),
        ),
        (&lab.host, format!("http://127.0.0.1:{TCP_PORT}/token")),
    ] {
        let out = run_timeout(
            Command::new("ip").args(["netns", "exec", ns, "curl", "-sS", "--max-time", "10", &url]),
            RUN_TIMEOUT,
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            token,
            "{url} ({name}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let target = format!("{},{UDP_PORT}", addr::HOST4);
    let out = run_timeout(
        Command::new("ip").args([
            "netns",
            "exec",
            &lab.remote,
            "python3",
            &p("client.py"),
            &target,
        ]),
        RUN_TIMEOUT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("OK {target} {} same port={UDP_PORT}", addr::HOST4)),
        "UDP ({name}): {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The servers stop: pasta lets the ports go.
    std::fs::write(dir.path().join("stop"), "").unwrap();
    assert!(
        wait_until(FOLLOW_TIMEOUT, || !host_listens(lab, "-Htln", TCP_PORT)
            && !host_listens(lab, "-Huln", UDP_PORT)),
        "pasta still listens after the servers stopped ({name})"
    );
    std::fs::write(dir.path().join("end"), "").unwrap();
    lab.stop(pid);
}
