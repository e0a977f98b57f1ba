//! The option table: every option of passt and pasta, once, with the modes it belongs to.
//!
//! clap builds the parser and `--help` from this table; the man page test checks the same
//! table against `man/passt.1`.

use clap::{Arg, ArgAction, Command};
use sans_io::config::Mode;

/// Which programs accept an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modes {
    Both,
    PasstOnly,
    PastaOnly,
}

impl Modes {
    pub fn allows(self, mode: Mode) -> bool {
        match self {
            Modes::Both => true,
            Modes::PasstOnly => mode == Mode::Passt,
            Modes::PastaOnly => mode == Mode::Pasta,
        }
    }
}

/// How often an option may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The last one wins, like getopt-based parsing in the original.
    LastWins,
    /// Every occurrence counts (`-a`, `-t`, `-D`, ...).
    Append,
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    /// Long name, also the clap id.
    pub long: &'static str,
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    /// Value name, for options that take a value.
    pub value: Option<&'static str>,
    pub modes: Modes,
    pub repeat: Repeat,
    pub help: &'static str,
}

const fn flag(long: &'static str, short: Option<char>, modes: Modes, help: &'static str) -> OptDef {
    OptDef {
        long,
        aliases: &[],
        short,
        value: None,
        modes,
        repeat: Repeat::LastWins,
        help,
    }
}

const fn valued(
    long: &'static str,
    short: Option<char>,
    value: &'static str,
    modes: Modes,
    repeat: Repeat,
    help: &'static str,
) -> OptDef {
    OptDef {
        long,
        aliases: &[],
        short,
        value: Some(value),
        modes,
        repeat,
        help,
    }
}

use Modes::{Both, PasstOnly, PastaOnly};
use Repeat::{Append, LastWins};

/// Every option, in the order `--help` lists them.
pub const OPTIONS: &[OptDef] = &[
    flag(
        "debug",
        Some('d'),
        Both,
        "Log debugging messages to standard error",
    ),
    flag(
        "trace",
        None,
        Both,
        "Log every packet too (implies --debug)",
    ),
    flag("quiet", Some('q'), Both, "Only print warnings and errors"),
    flag(
        "foreground",
        Some('f'),
        Both,
        "Stay in the foreground instead of daemonising",
    ),
    flag(
        "stderr",
        Some('e'),
        Both,
        "Accepted for compatibility; has no effect",
    ),
    valued(
        "log-file",
        Some('l'),
        "PATH",
        Both,
        LastWins,
        "Log to PATH instead of stderr or syslog",
    ),
    valued(
        "log-size",
        None,
        "SIZE",
        Both,
        LastWins,
        "Cap the log file at SIZE bytes [1048576]",
    ),
    valued(
        "runas",
        None,
        "UID[:GID]|LOGIN[:GROUP]",
        Both,
        LastWins,
        "Switch to this user and group (root switches to nobody by default)",
    ),
    flag("help", Some('h'), Both, "Print this help and exit"),
    flag("version", None, Both, "Print the version and exit"),
    valued(
        "pcap",
        Some('p'),
        "FILE",
        Both,
        LastWins,
        "Capture guest-side frames to FILE (pcap)",
    ),
    valued(
        "conf-path",
        Some('c'),
        "PATH",
        Both,
        LastWins,
        "Serve the control socket (pesto) at PATH",
    ),
    valued(
        "pid",
        Some('P'),
        "FILE",
        Both,
        LastWins,
        "Write our PID to FILE once ready",
    ),
    valued(
        "mtu",
        Some('m'),
        "MTU",
        Both,
        LastWins,
        "MTU to advertise; 0: don't [65520]",
    ),
    valued(
        "address",
        Some('a'),
        "ADDR",
        Both,
        Append,
        "Guest address, once per IP version [host's]",
    ),
    valued(
        "netmask",
        Some('n'),
        "MASK",
        Both,
        LastWins,
        "IPv4 netmask, dotted or prefix length",
    ),
    valued(
        "mac-addr",
        Some('M'),
        "ADDR",
        Both,
        LastWins,
        "Our MAC address towards the guest",
    ),
    valued(
        "gateway",
        Some('g'),
        "ADDR",
        Both,
        Append,
        "Guest gateway, once per IP version [host's]",
    ),
    valued(
        "interface",
        Some('i'),
        "NAME",
        Both,
        LastWins,
        "Host interface to copy addresses and routes from",
    ),
    valued(
        "outbound",
        Some('o'),
        "ADDR",
        Both,
        Append,
        "Source address of outbound sockets, per IP version",
    ),
    valued(
        "outbound-if4",
        None,
        "NAME",
        Both,
        LastWins,
        "Bind IPv4 outbound sockets to interface NAME",
    ),
    valued(
        "outbound-if6",
        None,
        "NAME",
        Both,
        LastWins,
        "Bind IPv6 outbound sockets to interface NAME",
    ),
    valued(
        "dns",
        Some('D'),
        "ADDR|none",
        Both,
        Append,
        "DNS server for the guest instead of resolv.conf's",
    ),
    valued(
        "dns-forward",
        None,
        "ADDR",
        Both,
        Append,
        "Redirect the guest's DNS traffic to ADDR to --dns-host",
    ),
    valued(
        "dns-host",
        None,
        "ADDR",
        Both,
        Append,
        "Where --dns-forward traffic goes [first resolver]",
    ),
    valued(
        "search",
        Some('S'),
        "LIST|none",
        Both,
        Append,
        "DNS search list instead of resolv.conf's",
    ),
    flag(
        "no-dhcp-dns",
        None,
        PasstOnly,
        "Don't hand DNS servers out via DHCP, NDP, DHCPv6",
    ),
    flag(
        "dhcp-dns",
        None,
        PastaOnly,
        "Hand DNS servers out via DHCP, NDP, DHCPv6",
    ),
    flag(
        "no-dhcp-search",
        None,
        PasstOnly,
        "Don't hand the search list out",
    ),
    flag(
        "dhcp-search",
        None,
        PastaOnly,
        "Hand the search list out via DHCP, NDP, DHCPv6",
    ),
    flag("no-tcp", None, Both, "Don't translate TCP"),
    flag("no-udp", None, Both, "Don't translate UDP"),
    flag(
        "no-icmp",
        None,
        Both,
        "Don't translate ICMP and ICMPv6 echo",
    ),
    flag("no-dhcp", None, Both, "Don't answer DHCP"),
    flag("no-ndp", None, Both, "Don't answer NDP"),
    flag("no-dhcpv6", None, Both, "Don't answer DHCPv6"),
    flag("no-ra", None, Both, "Don't send router advertisements"),
    flag(
        "no-map-gw",
        None,
        Both,
        "Don't map the gateway address to the host (--map-host-loopback none)",
    ),
    valued(
        "map-host-loopback",
        None,
        "ADDR|none",
        Both,
        Append,
        "Address the guest uses to reach the host's loopback [gateway]",
    ),
    valued(
        "map-guest-addr",
        None,
        "ADDR|none",
        Both,
        Append,
        "Address the guest uses to reach the host's own address [none]",
    ),
    flag(
        "freebind",
        None,
        Both,
        "Bind forwarded ports to addresses the host doesn't have yet",
    ),
    valued(
        "hostname",
        Some('H'),
        "NAME",
        Both,
        LastWins,
        "Host name for the guest (DHCP, DHCPv6)",
    ),
    valued(
        "fqdn",
        None,
        "NAME",
        Both,
        LastWins,
        "Fully qualified name for the guest (DHCP, DHCPv6)",
    ),
    flag("ipv4-only", Some('4'), Both, "IPv4 only"),
    flag("ipv6-only", Some('6'), Both, "IPv6 only"),
    valued(
        "tcp-ports",
        Some('t'),
        "SPEC",
        Both,
        Append,
        "TCP ports to forward to the guest [passt: none, pasta: auto]",
    ),
    valued(
        "udp-ports",
        Some('u'),
        "SPEC",
        Both,
        Append,
        "UDP ports to forward to the guest [passt: none, pasta: auto]",
    ),
    OptDef {
        long: "socket",
        aliases: &["socket-path"],
        short: Some('s'),
        value: Some("PATH"),
        modes: PasstOnly,
        repeat: LastWins,
        help: "UNIX domain socket for qemu [first free /tmp/passt_N.socket]",
    },
    valued(
        "fd",
        Some('F'),
        "FD",
        PasstOnly,
        LastWins,
        "Use this connected socket (implies --one-off)",
    ),
    flag(
        "one-off",
        Some('1'),
        PasstOnly,
        "Quit when the first client disconnects",
    ),
    flag(
        "vhost-user",
        None,
        PasstOnly,
        "Serve qemu's vhost-user protocol on the socket (guest memory shared, no copy per frame)",
    ),
    flag(
        "print-capabilities",
        None,
        PasstOnly,
        "Print the vhost-user back-end capabilities (JSON) and exit",
    ),
    valued(
        "ns-ifname",
        Some('I'),
        "NAME",
        PastaOnly,
        LastWins,
        "Tap name in the namespace [host's]",
    ),
    valued(
        "tcp-ns",
        Some('T'),
        "SPEC",
        PastaOnly,
        Append,
        "TCP ports to forward out of the namespace [auto]",
    ),
    valued(
        "udp-ns",
        Some('U'),
        "SPEC",
        PastaOnly,
        Append,
        "UDP ports to forward out of the namespace [auto]",
    ),
    valued(
        "userns",
        None,
        "PATH",
        PastaOnly,
        LastWins,
        "User namespace to join",
    ),
    valued(
        "netns",
        None,
        "PATH|NAME",
        PastaOnly,
        LastWins,
        "Network namespace to join",
    ),
    flag(
        "netns-only",
        None,
        PastaOnly,
        "Join or create a network namespace only, no user namespace",
    ),
    flag(
        "no-netns-quit",
        None,
        PastaOnly,
        "Keep running when the joined namespace goes away",
    ),
    flag(
        "config-net",
        None,
        PastaOnly,
        "Configure addresses, routes and link in the namespace",
    ),
    flag(
        "no-copy-routes",
        None,
        PastaOnly,
        "With --config-net: default route only (deprecated)",
    ),
    flag(
        "no-copy-addrs",
        None,
        PastaOnly,
        "With --config-net: one address only (deprecated)",
    ),
    valued(
        "ns-mac-addr",
        None,
        "ADDR",
        PastaOnly,
        LastWins,
        "MAC address of the namespace's tap",
    ),
    flag(
        "no-splice",
        None,
        PastaOnly,
        "Send local traffic through the tap instead of the bypass",
    ),
    flag(
        "host-lo-to-ns-lo",
        None,
        PastaOnly,
        "Deliver host loopback traffic to the namespace's loopback (deprecated)",
    ),
];

/// Positional arguments of pasta: the command to spawn, or a PID.
pub const COMMAND_ARG: &str = "command";

/// The clap command for one mode. Options of the other mode are parsed too (so that we can
/// say they belong to the other program) but hidden from `--help`.
pub fn command(mode: Mode) -> Command {
    let mut cmd = Command::new(mode.name())
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args_override_self(true)
        .infer_long_args(true)
        .dont_collapse_args_in_usage(true)
        .about(match mode {
            Mode::Passt => "User-mode networking for virtual machines, over qemu's UNIX socket",
            Mode::Pasta => "User-mode networking for network namespaces, over a tap device",
        });
    cmd = match mode {
        Mode::Passt => cmd.override_usage("passt [OPTION]..."),
        Mode::Pasta => cmd.override_usage(
            "pasta [OPTION]... [COMMAND [ARG]...]\n       pasta [OPTION]... PID\n       pasta [OPTION]... --netns PATH|NAME",
        ),
    };
    for def in OPTIONS {
        let mut arg = Arg::new(def.long).long(def.long).help(def.help);
        if !def.aliases.is_empty() {
            arg = arg.visible_aliases(def.aliases.iter().copied());
        }
        if let Some(short) = def.short {
            arg = arg.short(short);
        }
        arg = match (def.value, def.repeat) {
            (None, _) => arg.action(ArgAction::SetTrue),
            (Some(name), LastWins) => arg.value_name(name).action(ArgAction::Set),
            (Some(name), Append) => arg.value_name(name).action(ArgAction::Append),
        };
        if def.value.is_some() {
            // getopt takes the next word as the value whatever it looks like.
            arg = arg.allow_hyphen_values(true).num_args(1);
        }
        if !def.modes.allows(mode) {
            arg = arg.hide(true);
        }
        cmd = cmd.arg(arg);
    }
    if mode == Mode::Pasta {
        cmd = cmd.arg(
            Arg::new(COMMAND_ARG)
                .value_name("COMMAND [ARG]...|PID")
                .help("Command to run in a new namespace (default: a shell), or PID to join")
                .num_args(1..)
                .trailing_var_arg(true)
                .value_parser(clap::value_parser!(std::ffi::OsString)),
        );
    }
    cmd
}
