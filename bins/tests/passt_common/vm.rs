//! passt's tests with a real guest: qemu boots the distribution's kernel with a small busybox
//! initramfs built here, whose /init takes a DHCP lease and an IPv6 address from passt, pings,
//! fetches a file from the remote namespace byte for byte over IPv4 and IPv6 and serves one
//! back, reporting on its serial console (lines starting with "VMT "). Shared by the
//! stream-socket test (passt_vm.rs) and the vhost-user one (passt_vhost_user.rs).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::common::{
    self, addr, random_file, require, run_timeout, Lab, Need, Shape, TempDir, FILE_SERVER_PY,
    TIMEOUT,
};

pub const HTTP_PORT: u16 = 8000;
pub const BLOB_LEN: usize = 1 << 20;
/// Where the remote takes a guest's upload (`vmt.upload=1`: 1 MiB, see [`upload_sink`]).
pub const UPLOAD_PORT: u16 = 8009;

/// Takes one connection on the remote's [`addr::SERVER4`]:[`UPLOAD_PORT`], reads 1 MiB (or
/// to its end) and writes the SHA-256 of what came to `out`. Bounded: gives up after 300 s.
const UPLOAD_SINK_PY: &str = r#"
import hashlib, os, socket, sys
host, port, want, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(1)
s.settimeout(300)
c, _ = s.accept()
c.settimeout(120)
h, n = hashlib.sha256(), 0
while n < want:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
c.close()
with open(out + ".tmp", "w") as f:
    f.write(h.hexdigest())
os.rename(out + ".tmp", out)
"#;

/// Starts the remote's upload sink (see [`UPLOAD_SINK_PY`]); returns the file its SHA-256
/// will be in once the upload is over.
pub fn upload_sink(rig: &mut Rig) -> PathBuf {
    let script = rig.dir.path().join("upload_sink.py");
    std::fs::write(&script, UPLOAD_SINK_PY).unwrap();
    let out = rig.dir.path().join("upload.sha");
    let sink = rig.lab.remote_command(
        "python3",
        &[
            script.to_str().unwrap(),
            addr::SERVER4,
            &UPLOAD_PORT.to_string(),
            &(1usize << 20).to_string(),
            out.to_str().unwrap(),
        ],
    );
    rig.lab.spawn(sink);
    assert!(
        rig.lab
            .wait_listening(&rig.lab.remote, UPLOAD_PORT, TIMEOUT),
        "the upload sink"
    );
    out
}
/// From qemu's start to the guest's last word: generous for TCG on a busy 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The kernel and its modules directory, when everything the guest needs is here; otherwise
/// says what isn't (a failure under CI).
pub fn vm_prerequisites() -> Option<(PathBuf, PathBuf)> {
    let kernel = std::fs::read_dir("/boot").ok().and_then(|d| {
        let mut k: Vec<PathBuf> = d
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .collect();
        k.sort();
        k.pop()
    });
    let modules = kernel.as_ref().map(|k| {
        let ver = k.file_name().unwrap().to_str().unwrap()["vmlinuz-".len()..].to_owned();
        PathBuf::from("/lib/modules").join(ver)
    });
    let kernel_ok = matches!((&kernel, &modules),
        (Some(k), Some(m)) if readable(k) && m.join("modules.dep").exists());
    // The guest has no libraries: its busybox must be static.
    let static_busybox = Path::new("/bin/busybox").exists()
        && Command::new("ldd")
            .arg("/bin/busybox")
            .output()
            .is_ok_and(|o| !o.status.success());
    // Compressed modules are unpacked for the guest with their tool.
    let dep = modules
        .as_ref()
        .and_then(|m| std::fs::read_to_string(m.join("modules.dep")).ok())
        .unwrap_or_default();
    let mut needs = vec![
        Need::Tool("qemu-system-x86_64"),
        Need::Other(
            "a kernel image in /boot with its modules (linux-image-amd64)".to_owned(),
            kernel_ok,
        ),
        Need::Other(
            "a static /bin/busybox (busybox-static)".to_owned(),
            static_busybox,
        ),
        Need::Tool("ldd"),
        Need::Tool("sysctl"),
        Need::Tool("cpio"),
        Need::Tool("gzip"),
        Need::Tool("curl"),
        Need::Tool("python3"),
    ];
    if dep.contains(".ko.xz") {
        needs.push(Need::Tool("xz"));
    }
    if dep.contains(".ko.zst") {
        needs.push(Need::Tool("zstd"));
    }
    if !require(&needs) {
        return None;
    }
    Some((kernel?, modules?))
}

pub fn readable(p: &Path) -> bool {
    std::fs::File::open(p).is_ok()
}

/// `kvm` where it can run the distribution's kernel, `tcg` otherwise.
pub fn accel() -> String {
    if let Ok(a) = std::env::var("PASST_TEST_ACCEL") {
        return a;
    }
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    // /dev/kvm alone isn't enough: some hosts offer a paravirtual flavour that only boots
    // guests built for it. Hardware virtualisation shows as vmx or svm.
    let hw = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    });
    if kvm && hw { "kvm" } else { "tcg" }.to_owned()
}

/// Modules the guest needs that the kernel doesn't have built in, dependencies first.
pub fn modules_to_load(modules: &Path, kernel: &Path) -> Vec<PathBuf> {
    let ver = &kernel.file_name().unwrap().to_str().unwrap()["vmlinuz-".len()..];
    let config = std::fs::read_to_string(format!("/boot/config-{ver}")).unwrap_or_default();
    let wanted: Vec<&str> = [("VIRTIO_PCI", "virtio_pci"), ("VIRTIO_NET", "virtio_net")]
        .into_iter()
        .filter(|(sym, _)| !config.contains(&format!("CONFIG_{sym}=y\n")))
        .map(|(_, m)| m)
        .collect();
    let dep = std::fs::read_to_string(modules.join("modules.dep")).expect("modules.dep");
    let mut paths = HashMap::new();
    let mut deps = HashMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let name = module_name(path);
        paths.insert(name.clone(), path.to_owned());
        deps.insert(
            name,
            rest.split_whitespace().map(module_name).collect::<Vec<_>>(),
        );
    }
    let mut order = Vec::new();
    fn visit(
        n: &str,
        deps: &HashMap<String, Vec<String>>,
        paths: &HashMap<String, String>,
        order: &mut Vec<PathBuf>,
        seen: &mut Vec<String>,
    ) {
        if seen.iter().any(|s| s == n) {
            return;
        }
        seen.push(n.to_owned());
        for d in deps.get(n).into_iter().flatten() {
            visit(d, deps, paths, order, seen);
        }
        if let Some(p) = paths.get(n) {
            order.push(PathBuf::from(p));
        }
    }
    let mut seen = Vec::new();
    for m in wanted {
        visit(m, &deps, &paths, &mut order, &mut seen);
    }
    order
}

pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The guest's /init: modules, DHCP, SLAAC, checks, then the served file; lines starting
/// with "VMT " on the console are for the test.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin /www /etc
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
say() { echo "VMT $*"; }
bye() { say end "$@"; sync; poweroff -f; sleep 30; }
say init uptime=$(cut -d' ' -f1 /proc/uptime)
for m in $(cat /modules.order); do insmod "/modules/$m" || say insmod-failed "$m"; done
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
udhcpc -i eth0 -f -q -n -t 5 -T 2 -O search -O mtu -s /udhcpc.sh >/tmp/udhcpc.log 2>&1 || { cat /tmp/udhcpc.log; bye no-lease; }
. /tmp/lease
say lease ip=$ip mask=$mask router=$router dns=$dns search=$search mtu=$mtu
i=0
while [ $i -lt 150 ]; do
    a6=$(ip -6 addr show dev eth0 scope global | grep -v tentative | awk '/inet6/ { print $2; exit }')
    [ -n "$a6" ] && break
    sleep 0.1; i=$((i+1))
done
say slaac addr=$a6
ping -c 1 -W 5 "$SERVER4" >/dev/null 2>&1 && say ping4 ok || say ping4 failed
ping -c 1 -W 5 "$SERVER6" >/dev/null 2>&1 && say ping6 ok || say ping6 failed
# (busybox wget's own -T crashes in this build: timeout(1) bounds it instead)
timeout 60 wget -q -O /tmp/f4 "http://$SERVER4:$PORT/blob" </dev/null 2>/tmp/w4 || say wget4 failed $(cat /tmp/w4)
say fetch4 $(sha256sum /tmp/f4 | cut -d' ' -f1)
rm -f /tmp/f4
if grep -q vmt.upload /proc/cmdline; then
    dd if=/dev/urandom of=/tmp/up bs=1024 count=1024 2>/dev/null
    say upsha $(sha256sum /tmp/up | cut -d' ' -f1)
    timeout 60 nc "$SERVER4" "$UPLOAD_PORT" </tmp/up >/dev/null 2>&1 || say upload failed
    say uploaded
    rm -f /tmp/up
fi
grep -q vmt.short /proc/cmdline && bye short
timeout 60 wget -q -O /tmp/f6 "http://[$SERVER6]:$PORT/blob" </dev/null 2>/tmp/w6 || say wget6 failed $(cat /tmp/w6)
say fetch6 $(sha256sum /tmp/f6 | cut -d' ' -f1)
rm -f /tmp/f6
dd if=/dev/urandom of=/www/served bs=1024 count=512 2>/dev/null
httpd -p 80 -h /www
say served $(sha256sum /www/served | cut -d' ' -f1)
say ready
timeout 90 nc -l -p 81 >/tmp/release
bye $(cat /tmp/release)
"#;

pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "ip='$ip' mask='$mask' router='$router' dns='$dns' search='$search' mtu='$mtu'" >/tmp/lease
    ;;
esac
exit 0
"#;

/// Builds the initramfs in `dir`; returns its path.
pub fn build_initramfs(dir: &Path, kernel: &Path, modules: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("root");
    for d in ["bin", "modules"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let mut order = String::new();
    for m in modules_to_load(modules, kernel) {
        let src = modules.join(&m);
        let name = format!("{}.ko", module_name(m.to_str().unwrap()));
        let dst = root.join("modules").join(&name);
        let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "xz" | "zst" => {
                let tool = if ext == "xz" { "xz" } else { "zstd" };
                let out = run_timeout(Command::new(tool).arg("-dc").arg(&src), TIMEOUT);
                assert!(out.status.success(), "{tool} -dc {}", src.display());
                std::fs::write(&dst, out.stdout).unwrap();
            }
            _ => {
                std::fs::copy(&src, &dst).expect("copy module");
            }
        }
        order.push_str(&name);
        order.push('\n');
    }
    std::fs::write(root.join("modules.order"), order).unwrap();
    let vars = format!(
        "SERVER4={}\nSERVER6={}\nPORT={HTTP_PORT}\nUPLOAD_PORT={UPLOAD_PORT}\n",
        addr::SERVER4,
        addr::SERVER6
    );
    let init = INIT.replacen("\n", &format!("\n{vars}"), 1);
    for (name, text) in [("init", init.as_str()), ("udhcpc.sh", UDHCPC_SCRIPT)] {
        std::fs::write(root.join(name), text).unwrap();
        std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let image = dir.join("initramfs.cpio.gz");
    let out = run_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "cd '{}' && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > '{}'",
            root.display(),
            image.display()
        )),
        TIMEOUT,
    );
    assert!(out.status.success(), "cpio: {out:?}");
    image
}

/// How the guest's NIC reaches passt.
pub enum GuestNet<'a> {
    /// `-netdev` with this value (its id must be `n0`), and 256 MiB of private memory.
    Netdev(&'a str),
    /// vhost-user on this socket: 512 MiB of memory in a memfd shared with passt, as
    /// vhost-user needs.
    VhostUser(&'a Path),
}

impl GuestNet<'_> {
    fn args(&self) -> Vec<String> {
        let words: Vec<String> = match self {
            GuestNet::Netdev(netdev) => vec![
                "-m".into(),
                "256".into(),
                "-netdev".into(),
                (*netdev).into(),
            ],
            GuestNet::VhostUser(sock) => vec![
                "-m".into(),
                "512".into(),
                "-object".into(),
                "memory-backend-memfd,id=mem,size=512M,share=on".into(),
                "-numa".into(),
                "node,memdev=mem".into(),
                "-chardev".into(),
                format!("socket,id=c,path={}", sock.display()),
                "-netdev".into(),
                "vhost-user,id=n0,chardev=c".into(),
            ],
        };
        words
    }
}

/// The major version of qemu-system-x86_64, if it runs.
pub fn qemu_major() -> Option<u32> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("version ").nth(1)?;
    version.split('.').next()?.trim().parse().ok()
}

/// qemu, killed on drop, with its console lines.
pub struct Qemu {
    pub child: Child,
    lines: Receiver<String>,
    console: Vec<String>,
}

impl Qemu {
    /// Boots the guest in the lab's host namespace (through `wrapper`, if not empty), its NIC
    /// on `netdev`; `append` goes on the kernel command line.
    pub fn boot(
        lab: &Lab,
        wrapper: &[&str],
        accel: &str,
        kernel: &Path,
        initrd: &Path,
        net: &GuestNet<'_>,
        append: &str,
    ) -> Qemu {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.host])
            .args(wrapper)
            .arg("qemu-system-x86_64")
            .args(["-accel", accel, "-smp", "1"])
            .args(net.args())
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-serial", "stdio", "-monitor", "none"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 {append}"))
            .args([
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Qemu {
            child,
            lines,
            console: Vec::new(),
        }
    }

    /// The value of the next "VMT `key` ..." line (bounded); panics with the console so far.
    pub fn expect(&mut self, key: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let prefix = format!("VMT {key}");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim_end_matches('\r').to_owned();
                    self.console.push(line.clone());
                    if let Some(rest) = line.strip_prefix(&prefix) {
                        if rest.is_empty() || rest.starts_with(' ') {
                            return rest.trim().to_owned();
                        }
                    }
                    if let Some(end) = line.strip_prefix("VMT end") {
                        panic!(
                            "the guest stopped early ({end}) waiting for '{key}':\n{}",
                            self.console.join("\n")
                        );
                    }
                }
                Err(_) => panic!(
                    "no '{prefix}' from the guest within {timeout:?}; console:\n{}",
                    self.console.join("\n")
                ),
            }
        }
    }
}

impl Qemu {
    /// The next "VMT `key`" line must say `want`.
    pub fn check(&mut self, key: &str, want: &str, what: &str) {
        let got = self.expect(key, STEP_TIMEOUT);
        assert!(
            got == want,
            "{what}: got '{got}', expected '{want}'; console:\n{}",
            self.console.join("\n")
        );
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The lab with a file server on the remote, and the guest's kernel and initramfs.
pub struct Rig {
    pub lab: Lab,
    pub dir: TempDir,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// SHA-256 of the remote's `blob`.
    pub sha: String,
}

pub fn rig() -> Option<Rig> {
    let (kernel, modules) = vm_prerequisites()?;
    let mut lab = Lab::new(Shape::DualStack)?;
    lab.add_remote_servers();
    // Echo requests go through ping sockets, allowed here to any group.
    lab.host_sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    let dir = TempDir::new("vm");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let initrd = build_initramfs(dir.path(), &kernel, &modules);
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let sha = random_file(&www.join("blob"), BLOB_LEN);
    std::fs::write(dir.path().join("server.py"), FILE_SERVER_PY).unwrap();
    let ready = dir.path().join("server-ready");
    let server = lab.remote_command(
        "python3",
        &[
            dir.path().join("server.py").to_str().unwrap(),
            www.to_str().unwrap(),
            &HTTP_PORT.to_string(),
            ready.to_str().unwrap(),
        ],
    );
    lab.spawn(server);
    assert!(common::wait_for_file(&ready, TIMEOUT), "file server");
    Some(Rig {
        lab,
        dir,
        kernel,
        initrd,
        sha,
    })
}

/// The whole of the guest's /init after its "init" line: the lease and SLAAC address it
/// got, pings and fetches both ways (`sha`: the remote's blob), the file it serves fetched
/// through `-t 8080:80` from the host's loopback and from the remote, then its release
/// through `-t 8081:81`, after which it powers off.
pub fn check_whole_guest(qemu: &mut Qemu, lab: &Lab, sha: &str) {
    let lease = fields(&qemu.expect("lease", STEP_TIMEOUT));
    let got = |k: &str| lease.get(k).map(String::as_str).unwrap_or("");
    assert_eq!(got("ip"), addr::HOST4, "{lease:?}");
    assert_eq!(got("mask"), "24");
    assert_eq!(got("router"), addr::REMOTE4);
    assert_eq!(got("dns"), addr::DNS4);
    assert_eq!(got("search"), addr::SEARCH);
    assert_eq!(got("mtu"), "65520");
    let slaac = fields(&qemu.expect("slaac", STEP_TIMEOUT));
    let a6 = slaac.get("addr").cloned().unwrap_or_default();
    assert!(
        a6.starts_with("2001:db8:1:0:") && a6.ends_with("/64"),
        "SLAAC: {a6:?}"
    );
    qemu.check("ping4", "ok", "ping the remote over IPv4");
    qemu.check("ping6", "ok", "ping the remote over IPv6");
    qemu.check("fetch4", sha, "IPv4 fetch, byte for byte");
    qemu.check("fetch6", sha, "IPv6 fetch, byte for byte");

    // Inbound: the guest's web server through passt's -t 8080:80, from the host namespace's
    // loopback, and from the remote to the host's address.
    let served = qemu.expect("served", STEP_TIMEOUT);
    qemu.expect("ready", STEP_TIMEOUT);
    let fetch_in = |ns: &str, url: &str| {
        let out = run_timeout(
            Command::new("ip")
                .args(["netns", "exec", ns, "sh", "-c"])
                .arg(format!(
                    "curl -sS --max-time 30 {url} | sha256sum | cut -d' ' -f1"
                )),
            Duration::from_secs(40),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        fetch_in(&lab.host, "http://127.0.0.1:8080/served"),
        served,
        "-t 8080:80 from the host's loopback"
    );
    assert_eq!(
        fetch_in(&lab.remote, &format!("http://{}:8080/served", addr::HOST4)),
        served,
        "-t 8080:80 from the remote"
    );
    let release = run_timeout(
        Command::new("ip")
            .args(["netns", "exec", &lab.host, "python3", "-c"])
            .arg(
                "import socket; s = socket.create_connection(('127.0.0.1', 8081), 20); \
                 s.sendall(b'released\\n'); s.close()",
            ),
        TIMEOUT,
    );
    assert!(release.status.success(), "{release:?}");
    assert_eq!(qemu.expect("end", STEP_TIMEOUT), "released");
}

/// The guest's /init booted with `vmt.short=1`, after its "init" line: a lease with the
/// host's address, one IPv4 fetch (`sha`: the remote's blob; `what` says which), power off.
pub fn check_short_guest(qemu: &mut Qemu, sha: &str, what: &str) {
    let lease = fields(&qemu.expect("lease", STEP_TIMEOUT));
    assert_eq!(lease.get("ip").map(String::as_str), Some(addr::HOST4));
    qemu.check("fetch4", sha, what);
    assert_eq!(qemu.expect("end", STEP_TIMEOUT), "short");
}
