//! resolv.conf(5), the parts we hand to the guest: `nameserver` and `search`/`domain`.

use std::net::IpAddr;

/// What resolv.conf says about resolvers and the search list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// Nameservers in file order (a zone index such as `%eth0` is dropped).
    pub nameservers: Vec<IpAddr>,
    /// Search domains of the last `search` or `domain` line, trailing dots removed.
    pub search: Vec<String>,
}

impl ResolvConf {
    /// Parses the text of a resolv.conf. Unknown lines and malformed addresses are ignored,
    /// as the C library's resolver does.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let Some(word) = words.next() else { continue };
                    let addr = word.split('%').next().unwrap_or(word);
                    if let Ok(addr) = addr.parse() {
                        if !conf.nameservers.contains(&addr) {
                            conf.nameservers.push(addr);
                        }
                    }
                }
                // The last of `search` and `domain` wins, as in the resolver.
                Some("search") | Some("domain") => {
                    conf.search = words
                        .map(|d| d.trim_end_matches('.'))
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                _ => {}
            }
        }
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_and_search() {
        let conf = ResolvConf::parse(
            "# generated\n\
             nameserver 203.0.113.53\n\
             nameserver fe80::1%eth0\n\
             nameserver 2001:db8:2::53 # lab\n\
             nameserver not-an-address\n\
             options edns0\n\
             search example.com. lab.test\n",
        );
        assert_eq!(
            conf.nameservers,
            ["203.0.113.53", "fe80::1", "2001:db8:2::53"]
                .map(|a| a.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert_eq!(conf.search, ["example.com", "lab.test"]);
    }

    #[test]
    fn last_search_or_domain_line_wins() {
        let conf = ResolvConf::parse("search a.test b.test\ndomain c.test\n");
        assert_eq!(conf.search, ["c.test"]);
    }

    #[test]
    fn systemd_resolved_stub() {
        let conf = ResolvConf::parse("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n");
        assert_eq!(conf.nameservers, ["127.0.0.53".parse::<IpAddr>().unwrap()]);
        assert!(conf.search.is_empty());
    }

    #[test]
    fn duplicates_are_dropped() {
        let conf = ResolvConf::parse("nameserver 192.0.2.1\nnameserver 192.0.2.1\n");
        assert_eq!(conf.nameservers.len(), 1);
    }

    #[test]
    fn empty_and_garbage() {
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
        assert_eq!(
            ResolvConf::parse("nameserver\n\0\u{fffd}\n"),
            ResolvConf::default()
        );
    }
}
