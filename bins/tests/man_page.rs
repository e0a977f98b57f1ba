//! The man page documents every option `--help` lists, in the right section, and nothing else.

use std::collections::BTreeSet;
use std::ffi::OsString;

use passt::cli::options::{Modes, OPTIONS};
use passt::cli::{parse, Parsed};
use sans_io::config::Mode;

const MAN_PAGE: &str = include_str!("../../man/passt.1");

/// Option tag lines of the man page: the `.BR` line right after each `.TP`, with the section
/// it stands in.
fn documented() -> Vec<(String, Vec<String>)> {
    let mut section = String::new();
    let mut out = Vec::new();
    let mut lines = MAN_PAGE.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line
            .strip_prefix(".SH ")
            .or_else(|| line.strip_prefix(".SS "))
        {
            section = rest.trim_matches('"').to_owned();
        }
        if line.trim() == ".TP" {
            let Some(tag) = lines.peek().filter(|l| l.starts_with(".BR ")) else {
                continue;
            };
            let tag = tag.replace("\\-", "-");
            let spellings: Vec<String> = tag
                .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                .filter(|w| w.starts_with('-') && w.len() > 1)
                .map(str::to_owned)
                .collect();
            if !spellings.is_empty() {
                out.push((section.clone(), spellings));
            }
        }
    }
    out
}

fn help(mode: Mode) -> String {
    let args = [OsString::from(mode.name()), OsString::from("--help")];
    match parse(mode, &args) {
        Ok(Parsed::Help(text)) => text,
        other => panic!("{other:?}"),
    }
}

/// Long options as `--help` prints them.
fn listed(mode: Mode) -> BTreeSet<String> {
    help(mode)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .filter(|w| {
            w.starts_with("--")
                && w.len() > 2
                && w[2..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_listed_option_is_documented_and_the_other_way_round() {
    let in_help: BTreeSet<String> = listed(Mode::Passt)
        .union(&listed(Mode::Pasta))
        .cloned()
        .collect();
    let in_man: BTreeSet<String> = documented()
        .into_iter()
        .flat_map(|(_, s)| s)
        .filter(|s| s.starts_with("--"))
        .collect();
    let missing: Vec<_> = in_help.difference(&in_man).collect();
    let extra: Vec<_> = in_man.difference(&in_help).collect();
    assert!(
        missing.is_empty(),
        "listed by --help, missing from man/passt.1: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in man/passt.1, not listed by --help: {extra:?}"
    );
    // Sanity: the parse found a real list.
    assert!(in_help.len() > 50, "{in_help:?}");
}

#[test]
fn each_option_is_documented_once_in_its_mode_section_with_its_short_form() {
    let entries = documented();
    for def in OPTIONS {
        let long = format!("--{}", def.long);
        let found: Vec<_> = entries.iter().filter(|(_, s)| s.contains(&long)).collect();
        assert_eq!(found.len(), 1, "{long} documented {} times", found.len());
        let (section, spellings) = found[0];
        let expected_section = match def.modes {
            Modes::Both => "OPTIONS",
            Modes::PasstOnly => "passt-only options",
            Modes::PastaOnly => "pasta-only options",
        };
        assert_eq!(section, expected_section, "{long}");
        if let Some(c) = def.short {
            assert!(
                spellings.contains(&format!("-{c}")),
                "{long}: short -{c} not on its tag line"
            );
        }
        for alias in def.aliases {
            assert!(
                spellings.contains(&format!("--{alias}")),
                "{long}: alias --{alias} missing"
            );
        }
    }
}

#[test]
fn help_lists_only_the_modes_own_options() {
    let passt = listed(Mode::Passt);
    let pasta = listed(Mode::Pasta);
    assert!(passt.contains("--one-off") && !passt.contains("--config-net"));
    assert!(pasta.contains("--config-net") && !pasta.contains("--one-off"));
}
