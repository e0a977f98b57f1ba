//! The `passt`, `pasta`, `qrap` and `pesto` programs: command line, start-up, and the glue between the
//! OS shim and the core. One binary serves passt and pasta; the name it is run under picks
//! the mode, as with the original (a `pasta` link to `passt` is pasta).

pub mod autofwd;
pub mod capture;
pub mod cli;
pub mod control;
pub mod datapath;
pub mod drop_log;
pub mod forwards;
pub mod frame_pool;
pub mod passt;
pub mod pasta;
pub mod pesto;
mod process;
pub mod qrap;
mod sandbox;
pub mod shutdown;
pub mod summary;

use std::ffi::OsString;
use std::path::Path;

use os_shim::{hostinfo, netlink};
use sans_io::config::derive::{self, Level};
use sans_io::config::host::HostNet;
use sans_io::config::{Config, ListChoice, Mode};

pub use cli::mode_from_argv0;

/// Exit status for configuration and start-up errors.
pub const EXIT_FAILURE: i32 = 1;

/// Runs passt or pasta with a whole command line (`args[0]` picks the mode).
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let mode = args
        .first()
        .map(|a| mode_from_argv0(a))
        .unwrap_or(Mode::Passt);
    let name = mode.name();
    let cli = match cli::parse(mode, &args) {
        Ok(cli::Parsed::Run(cli)) => cli,
        Ok(cli::Parsed::Help(text)) => {
            print!("{text}");
            return 0;
        }
        Ok(cli::Parsed::Version(text)) => {
            println!("{text}");
            return 0;
        }
        Ok(cli::Parsed::Capabilities(text)) => {
            print!("{text}");
            return 0;
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            return EXIT_FAILURE;
        }
    };
    // Stage 1 of isolation, before anything is opened; then who we will run as, looked up
    // while the user database is still reachable (an unknown one stops us here).
    if let Err(e) = sandbox::at_start(mode, cli.fd.as_slice()) {
        eprintln!("{name}: {e}");
        return EXIT_FAILURE;
    }
    let identity = match os_shim::isolation::identity_for(cli.runas.as_deref()) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("{name}: {e}");
            return EXIT_FAILURE;
        }
    };
    let settings = os_shim::logging::LogSettings {
        ident: name,
        quiet: quiet(&cli),
        debug: cli.log.debug,
        trace: cli.log.trace,
        file: cli.log.file.clone(),
        file_size: cli.log.size,
    };
    if let Err(e) = os_shim::logging::init(&settings) {
        let file = cli.log.file.as_deref().unwrap_or(Path::new("")).display();
        eprintln!("{name}: cannot open log file {file}: {e}");
        return EXIT_FAILURE;
    }
    let config = match configure(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return EXIT_FAILURE;
        }
    };
    for line in summary::Summary(&config).to_string().lines() {
        log::info!("{line}");
    }
    match mode {
        Mode::Pasta => pasta::run(&cli, config, identity),
        Mode::Passt => passt::run(&cli, config, identity),
    }
}

/// Whether informational output is off: `--quiet`, or pasta running a given command (its
/// output is the user's), unless debugging.
fn quiet(cli: &cli::Cli) -> bool {
    let command_given = matches!(&cli.target, cli::PastaTarget::Spawn(c) if !c.is_empty());
    cli.log.quiet || (cli.mode == Mode::Pasta && command_given && !cli.log.debug)
}

/// Reads the host and derives the configuration, printing the notices it produced.
pub fn configure(cli: &cli::Cli) -> Result<Config, String> {
    let host = match netlink::Netlink::open().and_then(|mut nl| nl.dump_host_net()) {
        Ok(host) => host,
        Err(e) => {
            // Start anyway: with no host information we come up in local mode.
            log::warn!("cannot read the host's network configuration: {e}");
            HostNet::default()
        }
    };
    let need_resolv = !matches!(cli.net.dns, ListChoice::List(_) | ListChoice::Disabled)
        || !matches!(cli.net.search, ListChoice::List(_) | ListChoice::Disabled);
    let resolv = if need_resolv {
        hostinfo::read_resolv_conf(Path::new(hostinfo::RESOLV_CONF)).unwrap_or_else(|e| {
            log::warn!("cannot read {}: {e}", hostinfo::RESOLV_CONF);
            Default::default()
        })
    } else {
        Default::default()
    };
    let derived = derive::derive(&cli.net, &host, &resolv).map_err(|e| e.to_string())?;
    for notice in &derived.notices {
        match notice.level {
            Level::Warning => log::warn!("{}", notice.text),
            Level::Info => log::info!("{}", notice.text),
        }
    }
    Ok(derived.config)
}
