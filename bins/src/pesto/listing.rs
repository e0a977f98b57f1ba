//! The tables as pesto prints them (the C pesto's format): a title line with the socket
//! path, each table's name indented by two spaces, each rule by four.

use std::fmt::Write;

use super::apply::Table;

/// `title (PATH)`, then the tables.
pub fn format(title: &str, path: &str, tables: &[Table]) -> String {
    let mut out = format!("{title} ({path})\n");
    for table in tables {
        let _ = writeln!(out, "  {}", table.name);
        for rule in table.rules.rules() {
            let _ = writeln!(out, "    {rule}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sans_io::control::{Caps, Pif};
    use sans_io::flow::Proto;
    use sans_io::fwd::rule::{ForwardRule, ForwardTable};

    #[test]
    fn the_c_format() {
        let mut rules = ForwardTable::new();
        rules
            .add(ForwardRule {
                to: 80,
                ..ForwardRule::ports(Proto::Tcp, 8080, 8080)
            })
            .unwrap();
        let tables = [
            Table {
                pif: Pif::Host,
                name: "HOST".into(),
                caps: Caps(0x3f),
                rules,
            },
            Table {
                pif: Pif::Splice,
                name: "SPLICE".into(),
                caps: Caps(0x3f),
                rules: ForwardTable::new(),
            },
        ];
        assert_eq!(
            format("passt/pasta configuration", "/tmp/s", &tables),
            "passt/pasta configuration (/tmp/s)\n  HOST\n    TCP *:8080  =>  80\n  SPLICE\n"
        );
    }
}
