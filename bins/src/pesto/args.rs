//! pesto's command line, read the way the C pesto's `getopt_long` reads it: options and the
//! one PATH in any order, short options bundled (`-At8080`) or with their value in the next
//! word, long options with `=value` or the next word and abbreviated to any unambiguous
//! prefix, `--` ending the options. Hand-written rather than clap because what matters is
//! the order of the change options (`-A -t 1 -D -t 2`: the mode applies to the specs after
//! it), which clap's grouped matches do not keep.

use std::ffi::OsString;
use std::fmt;

/// One change, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `-A`: later specs add.
    Add,
    /// `-D`: later specs delete.
    Delete,
    /// `-C PIF`: empty that table.
    Clear(String),
    /// `-t/-u/-T/-U SPEC`, by its short letter.
    Spec(char, String),
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Run(Run),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub path: OsString,
    pub debug: bool,
    /// `-s`: print the tables before and after the change.
    pub show: bool,
    pub ops: Vec<Op>,
}

impl Run {
    /// No change option: only list the tables.
    pub fn is_list(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A command line that can't be run; the usage follows it on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const USAGE: &str = "\
Usage: pesto [OPTION]... PATH

Show or change the port forwarding of a running passt or pasta, through the
control socket at PATH (its -c, --conf-path).

  -A, --add              specs after this add forwards
  -D, --delete           specs after this delete forwards (exact match)
  -C, --clear PIF        remove every forward of table PIF (HOST, TAP, SPLICE)
  -t, --tcp-ports SPEC   inbound TCP forwards (table HOST)
  -u, --udp-ports SPEC   inbound UDP forwards (table HOST)
  -T, --tcp-ns SPEC      outbound TCP forwards (table SPLICE)
  -U, --udp-ns SPEC      outbound UDP forwards (table SPLICE)
  -s, --show             print the tables before and after the change
  -d, --debug            print protocol details on stderr
  -h, --help             print this help and exit
      --version          print the version and exit

Before any -A or -D, the first -t/-u replaces the HOST table and the first
-T/-U the SPLICE table. Without a change option, pesto lists the tables.
";

/// Long options: name, short letter (or a private one for --version), takes a value.
const LONG: &[(&str, char, bool)] = &[
    ("debug", 'd', false),
    ("help", 'h', false),
    ("version", 'V', false),
    ("add", 'A', false),
    ("delete", 'D', false),
    ("clear", 'C', true),
    ("tcp-ports", 't', true),
    ("udp-ports", 'u', true),
    ("tcp-ns", 'T', true),
    ("udp-ns", 'U', true),
    ("show", 's', false),
];

/// Short options and whether they take a value (the C optstring `dhADC:t:u:T:U:s`).
fn short_takes_value(c: char) -> Option<bool> {
    match c {
        'd' | 'h' | 'A' | 'D' | 's' => Some(false),
        'C' | 't' | 'u' | 'T' | 'U' => Some(true),
        _ => None,
    }
}

fn long_option(name: &str) -> Result<(char, bool), UsageError> {
    if let Some(&(_, c, v)) = LONG.iter().find(|(n, _, _)| *n == name) {
        return Ok((c, v));
    }
    let matches: Vec<_> = LONG
        .iter()
        .filter(|(n, _, _)| n.starts_with(name))
        .collect();
    match matches.as_slice() {
        [(_, c, v)] => Ok((*c, *v)),
        [] => Err(UsageError(format!("unrecognized option '--{name}'"))),
        _ => Err(UsageError(format!("option '--{name}' is ambiguous"))),
    }
}

fn text(word: &OsString) -> Result<&str, UsageError> {
    word.to_str()
        .ok_or_else(|| UsageError(format!("option {word:?} is not valid UTF-8")))
}

/// Reads `args` (without the program name).
pub fn parse(args: &[OsString]) -> Result<Command, UsageError> {
    let mut run = Run {
        path: OsString::new(),
        debug: false,
        show: false,
        ops: Vec::new(),
    };
    let mut paths = Vec::new();
    let mut help = false;
    let mut version = false;
    let mut words = args.iter();
    let mut only_paths = false;
    while let Some(word) = words.next() {
        let bytes = word.as_encoded_bytes();
        if only_paths || bytes.len() < 2 || bytes[0] != b'-' {
            paths.push(word.clone());
            continue;
        }
        let word_text = text(word)?;
        if word_text == "--" {
            only_paths = true;
            continue;
        }
        // (letter, value) pairs from this word, and the next word as a value if needed.
        let mut found: Vec<(char, Option<String>)> = Vec::new();
        if let Some(long) = word_text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let (c, takes) = long_option(name)?;
            let value = match (takes, inline) {
                (true, Some(v)) => Some(v),
                (true, None) => Some(
                    words
                        .next()
                        .map(text)
                        .transpose()?
                        .ok_or_else(|| {
                            UsageError(format!("option '--{name}' requires an argument"))
                        })?
                        .to_owned(),
                ),
                (false, Some(_)) => {
                    return Err(UsageError(format!(
                        "option '--{name}' doesn't allow an argument"
                    )))
                }
                (false, None) => None,
            };
            found.push((c, value));
        } else {
            let mut rest = &word_text[1..];
            while let Some(c) = rest.chars().next() {
                rest = &rest[c.len_utf8()..];
                let takes = short_takes_value(c)
                    .ok_or_else(|| UsageError(format!("invalid option -- '{c}'")))?;
                if !takes {
                    found.push((c, None));
                    continue;
                }
                let value = if rest.is_empty() {
                    words
                        .next()
                        .map(text)
                        .transpose()?
                        .ok_or_else(|| UsageError(format!("option requires an argument -- '{c}'")))?
                        .to_owned()
                } else {
                    rest.to_owned()
                };
                found.push((c, Some(value)));
                break;
            }
        }
        for (c, value) in found {
            match (c, value) {
                ('d', _) => run.debug = true,
                ('h', _) => help = true,
                ('V', _) => version = true,
                ('s', _) => run.show = true,
                ('A', _) => run.ops.push(Op::Add),
                ('D', _) => run.ops.push(Op::Delete),
                ('C', Some(v)) => run.ops.push(Op::Clear(v)),
                (c, Some(v)) => run.ops.push(Op::Spec(c, v)),
                (c, None) => {
                    return Err(UsageError(format!("option requires an argument -- '{c}'")))
                }
            }
        }
    }
    // As the C pesto: --help and --version act when they are read, before PATH is checked.
    if help {
        return Ok(Command::Help);
    }
    if version {
        return Ok(Command::Version);
    }
    match paths.len() {
        1 => run.path = paths.remove(0),
        0 => return Err(UsageError("missing socket PATH".into())),
        _ => return Err(UsageError("only one socket PATH may be given".into())),
    }
    Ok(Command::Run(run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Command, UsageError> {
        parse(&words.iter().map(OsString::from).collect::<Vec<_>>())
    }

    fn run(words: &[&str]) -> Run {
        match parse_words(words) {
            Ok(Command::Run(r)) => r,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    fn spec(c: char, s: &str) -> Op {
        Op::Spec(c, s.into())
    }

    #[test]
    fn podman_and_rootlesskit_command_lines() {
        let r = run(&[
            "--add",
            "-t",
            "0.0.0.0/8080:10.88.0.2/80",
            "-t",
            "[::]/8080:fd00::2/80",
            "/run/pasta.sock",
        ]);
        assert_eq!(r.path, "/run/pasta.sock");
        assert_eq!(
            r.ops,
            [
                Op::Add,
                spec('t', "0.0.0.0/8080:10.88.0.2/80"),
                spec('t', "[::]/8080:fd00::2/80")
            ]
        );
        let r = run(&["-A", "--tcp-ports=::/8080:80", "sock"]);
        assert_eq!(r.ops, [Op::Add, spec('t', "::/8080:80")]);
        let r = run(&["-D", "--udp-ports=0.0.0.0/53:53", "sock"]);
        assert_eq!(r.ops, [Op::Delete, spec('u', "0.0.0.0/53:53")]);
        assert_eq!(parse_words(&["--version"]), Ok(Command::Version));
    }

    #[test]
    fn getopt_forms() {
        // PATH first, bundles, attached values, abbreviations, `--`.
        let r = run(&[
            "sock",
            "-dsAt8080",
            "-U",
            "5000",
            "--del",
            "--tcp-n",
            "22",
            "--clear=HOST",
        ]);
        assert!(r.debug && r.show);
        assert_eq!(
            r.ops,
            [
                Op::Add,
                spec('t', "8080"),
                spec('U', "5000"),
                Op::Delete,
                spec('T', "22"),
                Op::Clear("HOST".into())
            ]
        );
        let r = run(&["-t", "1", "--", "-weird-path"]);
        assert_eq!(r.path, "-weird-path");
        assert!(run(&["sock"]).is_list());
        assert_eq!(parse_words(&["-h", "x", "y"]), Ok(Command::Help));
    }

    #[test]
    fn bad_command_lines() {
        let err = |w: &[&str]| parse_words(w).unwrap_err().0;
        assert_eq!(err(&[]), "missing socket PATH");
        assert_eq!(err(&["a", "b"]), "only one socket PATH may be given");
        assert_eq!(err(&["-x", "a"]), "invalid option -- 'x'");
        assert_eq!(err(&["--bogus", "a"]), "unrecognized option '--bogus'");
        assert_eq!(err(&["--u", "a"]), "option '--u' is ambiguous");
        assert_eq!(err(&["a", "-t"]), "option requires an argument -- 't'");
        assert_eq!(
            err(&["a", "--tcp-ports"]),
            "option '--tcp-ports' requires an argument"
        );
        assert_eq!(
            err(&["a", "--add=1"]),
            "option '--add' doesn't allow an argument"
        );
    }
}
