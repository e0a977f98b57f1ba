//! The command line of passt and pasta.
//!
//! Callers script us like the original, so parsing follows glibc getopt's habits: `--opt=value`
//! and `--opt value`, unambiguous prefixes of long options, bundled short flags, option parsing
//! that stops at pasta's first non-option word (the command's own options are its own), and
//! error texts worded like getopt's (Podman looks for "unrecognized option '--...'" to retry
//! without newer options).

pub mod options;
mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::ArgMatches;
use sans_io::config::{AddrChoice, Family, ListChoice, Mode, NetOptions};
use sans_io::fwd::{ForwardMode, PortItem, PortSpec};

use options::{Modes, COMMAND_ARG, OPTIONS};

/// Default and smallest accepted `--log-size`.
pub const DEFAULT_LOG_SIZE: u64 = 1 << 20;
pub const MIN_LOG_SIZE: u64 = 40 << 10;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Directory of named network namespaces, as `ip netns` keeps them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// What pasta attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PastaTarget {
    /// Create namespaces and run this command in them; empty means the user's shell.
    Spawn(Vec<OsString>),
    /// Join the namespaces of this process.
    Pid(u32),
    /// Join the network namespace bound at this path.
    Netns(PathBuf),
}

/// Logging choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub debug: bool,
    pub trace: bool,
    pub quiet: bool,
    pub file: Option<PathBuf>,
    pub size: u64,
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub mode: Mode,
    pub net: NetOptions,
    pub log: LogOptions,
    pub foreground: bool,
    pub runas: Option<String>,
    pub pcap: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// `-c`: the control socket's path.
    pub conf_path: Option<PathBuf>,
    /// passt: `-s`.
    pub socket_path: Option<PathBuf>,
    /// passt: `-F`.
    pub fd: Option<RawFd>,
    /// passt: `-1`, or implied by `-F`.
    pub one_off: bool,
    /// passt: `--vhost-user`.
    pub vhost_user: bool,
    /// pasta: what to attach to.
    pub target: PastaTarget,
    pub userns: Option<PathBuf>,
    pub netns_only: bool,
    pub no_netns_quit: bool,
    pub config_net: bool,
}

/// What a successful parse asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<Cli>),
    /// `--help`: print this and exit successfully.
    Help(String),
    /// `--version`.
    Version(String),
    /// `--print-capabilities`: print this on standard output (the vhost-user spec's place for
    /// it) and exit successfully.
    Capabilities(String),
}

/// A command-line error, printed as one line after the program name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// getopt: "unrecognized option '--foo'".
    UnknownLong(String),
    /// getopt: "invalid option -- 'x'".
    UnknownShort(char),
    /// getopt: "option '--mtu' requires an argument".
    MissingLong(String),
    /// getopt: "option requires an argument -- 'm'".
    MissingShort(char),
    /// A value that doesn't parse or isn't allowed.
    Value {
        option: String,
        value: String,
        reason: String,
    },
    /// An option of the other program.
    WrongMode { option: String, mode: Mode },
    /// Options that cannot be used together, or other misuse.
    Usage(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::UnknownLong(opt) => write!(f, "unrecognized option '{opt}'"),
            CliError::UnknownShort(c) => write!(f, "invalid option -- '{c}'"),
            CliError::MissingLong(opt) => write!(f, "option '{opt}' requires an argument"),
            CliError::MissingShort(c) => write!(f, "option requires an argument -- '{c}'"),
            CliError::Value {
                option,
                value,
                reason,
            } => {
                write!(f, "invalid value '{value}' for {option}: {reason}")
            }
            CliError::WrongMode { option, mode } => {
                let other = match mode {
                    Mode::Passt => "pasta",
                    Mode::Pasta => "passt",
                };
                write!(f, "{option} is an option of {other} only")
            }
            CliError::Usage(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for CliError {}

fn value_error(option: &str, value: &str, reason: impl fmt::Display) -> CliError {
    CliError::Value {
        option: format!("--{option}"),
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// The mode a program name selects: anything whose file name contains "pasta" is pasta,
/// the rest passt (so a `pasta` symbolic link to `passt` works).
pub fn mode_from_argv0(argv0: &std::ffi::OsStr) -> Mode {
    let name = std::path::Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains("pasta") {
        Mode::Pasta
    } else {
        Mode::Passt
    }
}

/// Parses a whole command line, `args[0]` included.
pub fn parse(mode: Mode, args: &[OsString]) -> Result<Parsed, CliError> {
    let mut cmd = options::command(mode);
    let matches = match cmd.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) => return Err(getopt_error(&e, args)),
    };
    if matches.get_flag("help") {
        return Ok(Parsed::Help(cmd.render_help().to_string()));
    }
    if matches.get_flag("version") {
        return Ok(Parsed::Version(format!(
            "{} {}",
            mode.name(),
            env!("CARGO_PKG_VERSION")
        )));
    }
    for def in OPTIONS {
        if !def.modes.allows(mode) && was_given(&matches, def.long) {
            return Err(CliError::WrongMode {
                option: format!("--{}", def.long),
                mode,
            });
        }
    }
    if matches.get_flag("print-capabilities") {
        return Ok(Parsed::Capabilities(VHOST_USER_CAPABILITIES.to_owned()));
    }
    build(mode, &matches).map(|cli| Parsed::Run(Box::new(cli)))
}

/// What `--print-capabilities` says, as the vhost-user spec's back-end program conventions
/// ask: a network device, with no optional features.
pub const VHOST_USER_CAPABILITIES: &str = "{\n  \"type\": \"net\"\n}\n";

fn was_given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// Translates clap's errors into getopt's words, so that scripts reading them keep working.
fn getopt_error(e: &clap::Error, args: &[OsString]) -> CliError {
    let invalid_arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::UnknownArgument => {
            let arg = invalid_arg.unwrap_or_default();
            unknown_option(&arg, args)
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals | ErrorKind::TooFewValues => {
            // clap names the argument "--long <VALUE>" or "-s <VALUE>".
            let arg = invalid_arg.unwrap_or_default();
            let opt = arg.split_whitespace().next().unwrap_or_default().to_owned();
            missing_value(&opt, args)
        }
        _ => {
            let text = e.to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid command line")
                .trim_start_matches("error: ")
                .to_owned();
            CliError::Usage(line)
        }
    }
}

/// Which spelling the user typed for an option clap reports as unknown: for a bundle of
/// short options (`-4x`) getopt names the offending character alone.
fn unknown_option(arg: &str, args: &[OsString]) -> CliError {
    if let Some(long) = arg.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        // getopt quotes the word as typed, including any "=value".
        let typed = args
            .iter()
            .filter_map(|a| a.to_str())
            .find(|a| a.strip_prefix("--").and_then(|l| l.split('=').next()) == Some(name))
            .unwrap_or(arg);
        return CliError::UnknownLong(typed.to_owned());
    }
    let Some(shorts) = arg.strip_prefix('-') else {
        // clap calls a stray positional an unknown argument: passt takes none.
        return CliError::Usage(format!("unexpected argument '{arg}'"));
    };
    let known = |c: char| OPTIONS.iter().any(|d| d.short == Some(c));
    match shorts.chars().find(|&c| !known(c)) {
        Some(c) => CliError::UnknownShort(c),
        None => CliError::Usage(format!("invalid option '{arg}'")),
    }
}

/// A value is missing only when its option is the last word, so that word says how the
/// user spelled it.
fn missing_value(opt: &str, args: &[OsString]) -> CliError {
    let last = args.last().and_then(|a| a.to_str()).unwrap_or(opt);
    if let Some(long) = last.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        return CliError::MissingLong(format!("--{name}"));
    }
    match last.strip_prefix('-').and_then(|s| s.chars().last()) {
        Some(c) => CliError::MissingShort(c),
        None => CliError::Usage(format!("option '{opt}' requires an argument")),
    }
}

fn string_values<'a>(m: &'a ArgMatches, id: &str) -> Vec<&'a str> {
    m.get_many::<String>(id)
        .map(|v| v.map(String::as_str).collect())
        .unwrap_or_default()
}

fn last_value<'a>(m: &'a ArgMatches, id: &str) -> Option<&'a str> {
    m.get_one::<String>(id).map(String::as_str)
}

/// Turns clap's matches into a validated [`Cli`].
fn build(mode: Mode, m: &ArgMatches) -> Result<Cli, CliError> {
    let mut net = NetOptions::new(mode);

    let v4_only = m.get_flag("ipv4-only");
    let v6_only = m.get_flag("ipv6-only");
    net.family = match (v4_only, v6_only) {
        (true, true) => {
            return Err(CliError::Usage(
                "--ipv4-only and --ipv6-only cannot be used together".to_owned(),
            ))
        }
        (true, false) => Family::V4Only,
        (false, true) => Family::V6Only,
        (false, false) => Family::Both,
    };

    if let Some(v) = last_value(m, "mtu") {
        net.mtu = Some(values::mtu("mtu", v)?);
    }
    for v in string_values(m, "address") {
        match values::host_addr("address", v)? {
            IpAddr::V4(a) => values::once_per_family("address", v, &mut net.addr4, a)?,
            IpAddr::V6(a) => values::once_per_family("address", v, &mut net.addr6, a)?,
        }
    }
    if let Some(v) = last_value(m, "netmask") {
        net.prefix_len4 = Some(values::netmask("netmask", v)?);
    }
    if let Some(v) = last_value(m, "mac-addr") {
        net.our_mac = Some(values::mac("mac-addr", v)?);
    }
    if let Some(v) = last_value(m, "ns-mac-addr") {
        net.ns_mac = Some(values::mac("ns-mac-addr", v)?);
    }
    for v in string_values(m, "gateway") {
        match values::gateway("gateway", v)? {
            IpAddr::V4(a) => values::once_per_family("gateway", v, &mut net.gateway4, a)?,
            IpAddr::V6(a) => values::once_per_family("gateway", v, &mut net.gateway6, a)?,
        }
    }
    for v in string_values(m, "outbound") {
        match values::host_addr("outbound", v)? {
            IpAddr::V4(a) => values::once_per_family("outbound", v, &mut net.outbound4, a)?,
            IpAddr::V6(a) => values::once_per_family("outbound", v, &mut net.outbound6, a)?,
        }
    }
    net.interface = last_value(m, "interface")
        .map(|v| values::ifname("interface", v))
        .transpose()?;
    net.outbound_if4 = last_value(m, "outbound-if4")
        .map(|v| values::ifname("outbound-if4", v))
        .transpose()?;
    net.outbound_if6 = last_value(m, "outbound-if6")
        .map(|v| values::ifname("outbound-if6", v))
        .transpose()?;
    net.ns_ifname = last_value(m, "ns-ifname")
        .map(|v| values::ifname("ns-ifname", v))
        .transpose()?;

    net.dns = dns_list(&string_values(m, "dns"))?;
    net.search = search_list(&string_values(m, "search"))?;
    for v in string_values(m, "dns-forward") {
        match values::any_addr("dns-forward", v)? {
            IpAddr::V4(a) => values::once_per_family("dns-forward", v, &mut net.dns_forward4, a)?,
            IpAddr::V6(a) => values::once_per_family("dns-forward", v, &mut net.dns_forward6, a)?,
        }
    }
    for v in string_values(m, "dns-host") {
        match values::any_addr("dns-host", v)? {
            IpAddr::V4(a) => values::once_per_family("dns-host", v, &mut net.dns_host4, a)?,
            IpAddr::V6(a) => values::once_per_family("dns-host", v, &mut net.dns_host6, a)?,
        }
    }
    for v in string_values(m, "map-host-loopback") {
        map_choice(
            "map-host-loopback",
            v,
            &mut net.map_host_loopback4,
            &mut net.map_host_loopback6,
        )?;
    }
    if m.get_flag("no-map-gw") {
        net.map_host_loopback4 = AddrChoice::Disabled;
        net.map_host_loopback6 = AddrChoice::Disabled;
    }
    for v in string_values(m, "map-guest-addr") {
        map_choice(
            "map-guest-addr",
            v,
            &mut net.map_guest_addr4,
            &mut net.map_guest_addr6,
        )?;
    }

    net.dhcp_dns = match mode {
        Mode::Passt => m.get_flag("no-dhcp-dns").then_some(false),
        Mode::Pasta => m.get_flag("dhcp-dns").then_some(true),
    };
    net.dhcp_search = match mode {
        Mode::Passt => m.get_flag("no-dhcp-search").then_some(false),
        Mode::Pasta => m.get_flag("dhcp-search").then_some(true),
    };
    net.hostname = last_value(m, "hostname")
        .map(|v| values::dns_name("hostname", v, 64))
        .transpose()?;
    net.fqdn = last_value(m, "fqdn")
        .map(|v| values::dns_name("fqdn", v, 255))
        .transpose()?;

    net.no_tcp = m.get_flag("no-tcp");
    net.no_udp = m.get_flag("no-udp");
    net.no_icmp = m.get_flag("no-icmp");
    net.no_dhcp = m.get_flag("no-dhcp");
    net.no_ndp = m.get_flag("no-ndp");
    net.no_dhcpv6 = m.get_flag("no-dhcpv6");
    net.no_ra = m.get_flag("no-ra");
    net.no_copy_routes = m.get_flag("no-copy-routes");
    net.no_copy_addrs = m.get_flag("no-copy-addrs");
    net.freebind = m.get_flag("freebind");
    net.no_splice = m.get_flag("no-splice");
    net.host_lo_to_ns_lo = m.get_flag("host-lo-to-ns-lo");

    net.tcp_in = forward_mode(mode, m, "tcp-ports")?;
    net.udp_in = forward_mode(mode, m, "udp-ports")?;
    net.tcp_out = forward_mode(mode, m, "tcp-ns")?;
    net.udp_out = forward_mode(mode, m, "udp-ns")?;

    let config_net = m.get_flag("config-net");
    for opt in ["no-copy-routes", "no-copy-addrs"] {
        if m.get_flag(opt) && !config_net {
            return Err(CliError::Usage(format!("--{opt} needs --config-net")));
        }
    }

    let trace = m.get_flag("trace");
    let log = LogOptions {
        debug: m.get_flag("debug") || trace,
        trace,
        quiet: m.get_flag("quiet"),
        file: last_value(m, "log-file").map(PathBuf::from),
        size: match last_value(m, "log-size") {
            Some(v) => values::log_size("log-size", v, MIN_LOG_SIZE)?,
            None => DEFAULT_LOG_SIZE,
        },
    };
    let runas = last_value(m, "runas")
        .map(|v| values::runas("runas", v))
        .transpose()?;

    let socket_path = match last_value(m, "socket") {
        Some(v) if v.is_empty() || v.len() > MAX_SOCKET_PATH => {
            return Err(value_error(
                "socket",
                v,
                format!("must be 1 to {MAX_SOCKET_PATH} bytes"),
            ))
        }
        v => v.map(PathBuf::from),
    };
    let fd = last_value(m, "fd")
        .map(|v| values::fd("fd", v))
        .transpose()?;
    if fd.is_some() && socket_path.is_some() {
        return Err(CliError::Usage(
            "--fd and --socket cannot be used together".to_owned(),
        ));
    }

    let (target, userns, netns_only) = pasta_target(mode, m)?;

    Ok(Cli {
        mode,
        net,
        log,
        foreground: m.get_flag("foreground"),
        runas,
        pcap: last_value(m, "pcap").map(PathBuf::from),
        pid_file: last_value(m, "pid").map(PathBuf::from),
        conf_path: last_value(m, "conf-path").map(PathBuf::from),
        socket_path,
        fd,
        one_off: m.get_flag("one-off") || fd.is_some(),
        vhost_user: m.get_flag("vhost-user"),
        target,
        userns,
        netns_only,
        no_netns_quit: m.get_flag("no-netns-quit"),
        config_net,
    })
}

/// `-D`: addresses, or `none` alone.
fn dns_list(values: &[&str]) -> Result<ListChoice<IpAddr>, CliError> {
    if values.is_empty() {
        return Ok(ListChoice::FromHost);
    }
    if values.contains(&"none") {
        if values.len() > 1 {
            return Err(CliError::Usage(
                "--dns none cannot be combined with addresses".to_owned(),
            ));
        }
        return Ok(ListChoice::Disabled);
    }
    let addrs = values
        .iter()
        .map(|v| values::any_addr("dns", v))
        .collect::<Result<_, _>>()?;
    Ok(ListChoice::List(addrs))
}

/// `-S`: space-separated domains (across repeated options), or `none` alone.
fn search_list(values: &[&str]) -> Result<ListChoice<String>, CliError> {
    if values.is_empty() {
        return Ok(ListChoice::FromHost);
    }
    if values.iter().any(|v| v.trim() == "none") {
        if values.len() > 1 {
            return Err(CliError::Usage(
                "--search none cannot be combined with domains".to_owned(),
            ));
        }
        return Ok(ListChoice::Disabled);
    }
    let mut domains = Vec::new();
    for v in values {
        for word in v.split_whitespace() {
            let domain = values::dns_name("search", word, 253)?;
            domains.push(domain.trim_end_matches('.').to_owned());
        }
    }
    Ok(ListChoice::List(domains))
}

fn map_choice(
    option: &str,
    v: &str,
    v4: &mut AddrChoice<std::net::Ipv4Addr>,
    v6: &mut AddrChoice<std::net::Ipv6Addr>,
) -> Result<(), CliError> {
    if v == "none" {
        *v4 = AddrChoice::Disabled;
        *v6 = AddrChoice::Disabled;
        return Ok(());
    }
    match values::host_addr(option, v)? {
        IpAddr::V4(a) => *v4 = AddrChoice::Addr(a),
        IpAddr::V6(a) => *v6 = AddrChoice::Addr(a),
    }
    Ok(())
}

/// One protocol and direction of port forwarding, every option naming it in order.
fn forward_mode(mode: Mode, m: &ArgMatches, id: &str) -> Result<ForwardMode, CliError> {
    let mut fwd = ForwardMode::Unset;
    for v in string_values(m, id) {
        let spec: PortSpec = v.parse().map_err(|e| value_error(id, v, e))?;
        match (&spec, mode) {
            (PortSpec::Auto, Mode::Passt) => {
                return Err(value_error(id, v, "'auto' forwarding is for pasta only"))
            }
            (PortSpec::All, Mode::Pasta) => {
                return Err(value_error(id, v, "'all' forwarding is for passt only"))
            }
            // The C original's `ADDR/all`, `P-Q,auto`: parsed (pesto takes them); on the command
            // line `auto` and `all` stand alone (the engine keeps `auto` beside its tables).
            (PortSpec::Ports(r), _)
                if r.items
                    .iter()
                    .any(|i| matches!(i, PortItem::Auto | PortItem::All(_))) =>
            {
                return Err(value_error(
                    id,
                    v,
                    "'auto' or 'all' inside a port list is not supported yet",
                ))
            }
            _ => {}
        }
        fwd.add(spec).map_err(|e| value_error(id, v, e))?;
    }
    Ok(fwd)
}

/// pasta's positional arguments, `--netns` and `--userns`.
fn pasta_target(
    mode: Mode,
    m: &ArgMatches,
) -> Result<(PastaTarget, Option<PathBuf>, bool), CliError> {
    let mut netns_only = m.get_flag("netns-only");
    let userns = last_value(m, "userns").map(PathBuf::from);
    if mode == Mode::Passt {
        return Ok((PastaTarget::Spawn(Vec::new()), userns, netns_only));
    }
    let words: Vec<OsString> = m
        .get_many::<OsString>(COMMAND_ARG)
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let netns = last_value(m, "netns");
    let target = match (netns, words.as_slice()) {
        (Some(ns), []) => {
            if ns.is_empty() {
                return Err(value_error("netns", ns, "empty path or name"));
            }
            // Without --userns, joining a namespace by path joins the network namespace only.
            if userns.is_none() {
                netns_only = true;
            }
            PastaTarget::Netns(netns_path(ns))
        }
        (Some(_), _) => {
            return Err(CliError::Usage(
                "--netns cannot be combined with a PID or a command".to_owned(),
            ))
        }
        (None, [word]) if is_pid(word) => {
            let pid = word
                .to_str()
                .and_then(|s| s.parse().ok())
                .filter(|&p: &u32| p > 0);
            match pid {
                Some(pid) => PastaTarget::Pid(pid),
                None => {
                    return Err(CliError::Usage(format!(
                        "'{}' is not a valid PID",
                        word.to_string_lossy()
                    )))
                }
            }
        }
        (None, words) => PastaTarget::Spawn(words.to_vec()),
    };
    if matches!(target, PastaTarget::Spawn(_)) && userns.is_some() {
        return Err(CliError::Usage(
            "--userns needs a PID or --netns to go with it".to_owned(),
        ));
    }
    Ok((target, userns, netns_only))
}

fn is_pid(word: &OsString) -> bool {
    word.to_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// A `--netns` argument: a path as given, or a bare name under /run/netns as `ip netns` does.
pub fn netns_path(arg: &str) -> PathBuf {
    if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        PathBuf::from(NETNS_RUN_DIR).join(arg)
    }
}

/// Every option's long spellings, for the man page check.
pub fn long_options(modes: Option<Modes>) -> Vec<&'static str> {
    OPTIONS
        .iter()
        .filter(|d| modes.is_none_or(|m| d.modes == m))
        .flat_map(|d| std::iter::once(d.long).chain(d.aliases.iter().copied()))
        .collect()
}

#[cfg(test)]
mod tests;
