//! Domain names in DNS wire format (RFC 1035 section 3.1), as the configuration services
//! carry them: DHCP's domain search (option 119, RFC 3397) and client FQDN (option 81,
//! RFC 4702), DHCPv6's domain search list (option 24, RFC 3646) and client FQDN (option 39,
//! RFC 4704), and NDP's DNS search list (DNSSL, RFC 8106).
//!
//! A name is a run of labels, each a length octet (1 to 63) and that many octets, ended by
//! the root label, a zero octet. A partial name (RFC 4704 section 4.2) leaves the root label
//! out. A name takes at most 255 octets, length octets and root
//! included (RFC 1035 section 2.3.4). DHCP compresses its search list (RFC 3397 section 2,
//! with the pointers of RFC 1035 section 4.1.4); DHCPv6 must not (RFC 8415 section 10), and
//! NDP does not (RFC 8106 section 5.2).
//!
//! - [`encode`] writes one name; [`encode_list`] an uncompressed list within a size bound;
//!   [`encode_compressed_list`] a compressed one.
//! - [`decode`] reads one name, following compression pointers or refusing them
//!   ([`Pointers`]); [`Names`] reads a list of names, one after the other.
//! - [`Name`] and [`Names`] display in the presentation format of RFC 1035 section 5.1.

use std::fmt;

use super::fmt_hex;

/// The longest label: the top two bits of a length octet give its type (RFC 1035 sections
/// 2.3.4 and 4.1.4).
pub const MAX_LABEL_LEN: usize = 63;
/// The longest name in wire format, length octets and root label included (RFC 1035 section
/// 2.3.4).
pub const MAX_NAME_LEN: usize = 255;

/// Whether a name being decoded may contain compression pointers (RFC 1035 section 4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pointers {
    /// Followed, backwards only: DHCP options 119 and 81 (RFC 3397, RFC 4702).
    Allowed,
    /// Malformed: DHCPv6 (RFC 8415 section 10) and NDP (RFC 8106 section 5.2).
    Refused,
}

/// `name` without its one optional trailing dot, if it can be encoded in at most
/// [`MAX_NAME_LEN`] octets (with the root label if `fully_qualified`) as labels of 1 to
/// [`MAX_LABEL_LEN`] octets (RFC 1035 section 2.3.4).
fn checked(name: &str, fully_qualified: bool) -> Option<&str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    // Each dot becomes a length octet, plus one for the first label and one for the root.
    let wire_len = name.len() + 1 + usize::from(fully_qualified);
    let labels_fit = name
        .split('.')
        .all(|l| (1..=MAX_LABEL_LEN).contains(&l.len()));
    (!name.is_empty() && wire_len <= MAX_NAME_LEN && labels_fit).then_some(name)
}

fn put_label(out: &mut Vec<u8>, label: &str) {
    out.push(label.len() as u8); // at most 63, checked by checked()
    out.extend_from_slice(label.as_bytes());
}

/// Appends `name` in DNS wire format (RFC 1035 section 3.1), uncompressed; as a partial name
/// (RFC 4704 section 4.2), without the root label, unless `fully_qualified`. One trailing dot is accepted. A name that can't be encoded (empty, an
/// empty label, a label over 63 octets, over 255 octets in all: RFC 1035 section 2.3.4)
/// appends nothing and returns false.
pub fn encode(out: &mut Vec<u8>, name: &str, fully_qualified: bool) -> bool {
    let Some(name) = checked(name, fully_qualified) else {
        return false;
    };
    for label in name.split('.') {
        put_label(out, label);
    }
    if fully_qualified {
        out.push(0);
    }
    true
}

/// Fully qualified names one after the other, uncompressed: DHCPv6 option 24 (RFC 3646
/// section 4, RFC 8415 section 10) and the DNSSL option (RFC 8106 section 5.2). Names that
/// can't be encoded are left out; the list ends before the first name that would make its
/// length fail `fits`.
pub fn encode_list<S: AsRef<str>>(names: &[S], fits: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        let before = out.len();
        if encode(&mut out, name.as_ref(), true) && !fits(out.len()) {
            out.truncate(before);
            break;
        }
    }
    out
}

/// DHCP option 119 (RFC 3397): fully qualified names one after the other, each suffix seen
/// before replaced by a compression pointer to it (RFC 1035 section 4.1.4). Offsets count
/// from the start of the option data, across RFC 3396 splitting. Names that can't be encoded
/// and repeated names (compared ignoring ASCII case) are left out.
pub fn encode_compressed_list<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    let all: Vec<Vec<&str>> = names
        .iter()
        .filter_map(|n| checked(n.as_ref(), true))
        .map(|n| n.split('.').collect())
        .collect();
    let mut out = Vec::new();
    // Suffixes written so far (a name from some label to its end), with their offsets.
    let mut written: Vec<(&[&str], usize)> = Vec::new();
    let same = |a: &[&str], b: &[&str]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
    };
    for (n, name) in all.iter().enumerate() {
        if all[..n].iter().any(|earlier| same(earlier, name)) {
            continue;
        }
        let mut pointer = None;
        for i in 0..name.len() {
            let suffix = &name[i..];
            if let Some(&(_, at)) = written.iter().find(|(s, _)| same(s, suffix)) {
                pointer = Some(at);
                break;
            }
            // A pointer has 14 bits of offset; later suffixes just can't be pointed to.
            if out.len() < 0x4000 {
                written.push((suffix, out.len()));
            }
            put_label(&mut out, suffix[0]);
        }
        match pointer {
            Some(at) => out.extend_from_slice(&(0xc000 | at as u16).to_be_bytes()),
            None => out.push(0),
        }
    }
    out
}

/// A decoded name: its labels, and whether it ended with the root label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    labels: Vec<Vec<u8>>,
    fully_qualified: bool,
}

impl Name {
    /// The labels, root label excluded, each 1 to 63 octets.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        self.labels.iter().map(Vec::as_slice)
    }

    /// False for a partial name (RFC 4704 section 4.2): one the data ended in.
    pub fn is_fully_qualified(&self) -> bool {
        self.fully_qualified
    }

    /// The labels as UTF-8 (invalid sequences replaced), joined by dots, without escapes
    /// nor a final dot: how our DHCP messages show names.
    pub fn to_lossy_string(&self) -> String {
        let labels: Vec<_> = self.labels().map(String::from_utf8_lossy).collect();
        labels.join(".")
    }
}

/// The presentation format of RFC 1035 section 5.1: labels joined by dots, a final dot if
/// fully qualified ("." alone for the root), and octets other than printable ASCII, dots
/// and backslashes within a label as `\DDD` (decimal).
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, label) in self.labels().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for &c in label {
                if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                    write!(f, "{}", char::from(c))?;
                } else {
                    write!(f, "\\{c:03}")?;
                }
            }
        }
        if self.fully_qualified {
            f.write_str(".")?;
        }
        Ok(())
    }
}

/// Decodes the name starting at `start` in `data` (RFC 1035 section 3.1): the name, and
/// where whatever follows it starts. `None` if it is malformed: a label cut short, a
/// reserved label type (01 or 10), a pointer where [`Pointers::Refused`], more than 255
/// octets (RFC 1035 section 2.3.4), or no label at all before the data ends.
///
/// Where [`Pointers::Allowed`], a compression pointer (RFC 1035 section 4.1.4) must point
/// backwards, to "a prior occurrence": so a run of pointers ends, every label read counts
/// towards the 255 octets, and decoding ends whatever the data. A name the data ends in,
/// after at least one label, is partial (RFC 4704 section 4.2); callers that want only
/// fully qualified names check [`Name::is_fully_qualified`]. Never panics.
pub fn decode(data: &[u8], start: usize, pointers: Pointers) -> Option<(Name, usize)> {
    let mut labels = Vec::new();
    let mut pos = start;
    // Where the data after the name starts, once a pointer was followed.
    let mut next = None;
    // Octets of the labels read so far, length octets included.
    let mut wire_len = 0;
    loop {
        let Some(&len) = data.get(pos) else {
            if labels.is_empty() {
                return None;
            }
            let name = Name {
                labels,
                fully_qualified: false,
            };
            return Some((name, next.unwrap_or(pos)));
        };
        match len {
            0 => {
                if wire_len + 1 > MAX_NAME_LEN {
                    return None;
                }
                let name = Name {
                    labels,
                    fully_qualified: true,
                };
                return Some((name, next.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 && pointers == Pointers::Allowed => {
                let target = usize::from(u16::from_be_bytes([l, *data.get(pos + 1)?]) & 0x3fff);
                if target >= pos {
                    return None;
                }
                next.get_or_insert(pos + 2);
                pos = target;
            }
            l if l & 0xc0 != 0 => return None, // types 01 and 10 are reserved
            l => {
                let label = data.get(pos + 1..pos + 1 + usize::from(l))?;
                wire_len += 1 + label.len();
                if wire_len > MAX_NAME_LEN {
                    return None;
                }
                labels.push(label.to_vec());
                pos += 1 + label.len();
            }
        }
    }
}

/// The names one after the other in `data`, as in DHCP option 119, DHCPv6 options 24 and 39
/// and the DNSSL option: each [`decode`]d name, then, if the rest is malformed, `Err` with
/// that rest, and nothing after it.
///
/// Displays as "a.example., b.example." (presentation format, see [`Name`]), a malformed
/// rest as "(malformed: " and its octets in hex ")".
#[derive(Debug, Clone)]
pub struct Names<'a> {
    data: &'a [u8],
    pos: usize,
    pointers: Pointers,
    padded: bool,
}

impl<'a> Names<'a> {
    pub fn new(data: &'a [u8], pointers: Pointers) -> Names<'a> {
        Names {
            data,
            pos: 0,
            pointers,
            padded: false,
        }
    }

    /// Zero octets that end the data are padding, not root names (the DNSSL option,
    /// RFC 8106 section 5.2).
    pub fn padded(self) -> Names<'a> {
        Names {
            padded: true,
            ..self
        }
    }
}

impl<'a> Iterator for Names<'a> {
    type Item = Result<Name, &'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.data.get(self.pos..)?;
        if rest.is_empty() || (self.padded && rest.iter().all(|&c| c == 0)) {
            return None;
        }
        match decode(self.data, self.pos, self.pointers) {
            Some((name, next)) => {
                self.pos = next; // always past self.pos: every name takes an octet
                Some(Ok(name))
            }
            None => {
                self.pos = self.data.len();
                Some(Err(rest))
            }
        }
    }
}

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.clone().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match name {
                Ok(name) => write!(f, "{name}")?,
                Err(rest) => {
                    f.write_str("(malformed: ")?;
                    fmt_hex(f, rest)?;
                    f.write_str(")")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(name: &str, fully_qualified: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        encode(&mut out, name, fully_qualified).then_some(out)
    }

    /// The names of a compressed list as DHCP shows them.
    fn lossy_names(data: &[u8]) -> Vec<String> {
        Names::new(data, Pointers::Allowed)
            .map(|n| n.unwrap().to_lossy_string())
            .collect()
    }

    #[test]
    fn names_encode_and_decode() {
        let mut b = Vec::new();
        assert!(encode(&mut b, "example.org", true));
        assert!(encode(&mut b, "a.b.", true));
        assert_eq!(b, b"\x07example\x03org\x00\x01a\x01b\x00");
        assert_eq!(
            Names::new(&b, Pointers::Refused).to_string(),
            "example.org., a.b."
        );

        let p = encoded("host", false).unwrap();
        assert_eq!(p, b"\x04host");
        assert_eq!(Names::new(&p, Pointers::Refused).to_string(), "host");
    }

    #[test]
    fn bad_names_are_refused() {
        let mut b = Vec::new();
        assert!(!encode(&mut b, "", true));
        assert!(!encode(&mut b, ".", true));
        assert!(!encode(&mut b, "a..b", true));
        assert!(!encode(&mut b, &"x".repeat(64), true));
        let long = vec!["y".repeat(63); 4].join(".");
        assert!(!encode(&mut b, &long, true), "257 octets encoded");
        assert!(b.is_empty());
        assert!(encode(&mut b, &long[..long.len() - 2], true));
        assert_eq!(b.len(), MAX_NAME_LEN);
        // Without the root label, one more octet of name fits.
        assert_eq!(encoded(&long[..long.len() - 1], true), None);
        assert_eq!(encoded(&long[..long.len() - 1], false).unwrap().len(), 255);
    }

    #[test]
    fn padding_and_malformed_names_display() {
        let names = |b: &[u8]| Names::new(b, Pointers::Refused).to_string();
        assert_eq!(
            Names::new(b"\x01a\x00\x00\x00\x00", Pointers::Refused)
                .padded()
                .to_string(),
            "a."
        );
        assert_eq!(names(b"\x01a\x00\x00"), "a., .");
        assert_eq!(names(b"\x01a\x00\x05ab"), "a., (malformed: 056162)");
        assert_eq!(names(b"\xc0\x0c"), "(malformed: c00c)");
        assert_eq!(names(b"\x03a.\\\x00"), "a\\046\\092.");
    }

    #[test]
    fn search_list_is_compressed() {
        let names = [
            "eng.example.com",
            "example.com",
            "ops.example.com.",
            "EXAMPLE.COM",
            "bad..name",
            "other.org",
        ];
        let got = encode_compressed_list(&names);
        let mut want = Vec::new();
        want.extend_from_slice(b"\x03eng\x07example\x03com\x00"); // offsets 0, 4, 12
        want.extend_from_slice(&[0xc0, 4]); // example.com
        want.extend_from_slice(b"\x03ops\xc0\x04"); // ops. + example.com
        want.extend_from_slice(b"\x05other\x03org\x00");
        assert_eq!(got, want);
        assert_eq!(
            lossy_names(&got),
            [
                "eng.example.com",
                "example.com",
                "ops.example.com",
                "other.org"
            ]
        );
    }

    #[test]
    fn uncompressed_list_stops_at_the_bound() {
        let names = ["a.example", "bad..name", "bb.example", "c.example"];
        let all = encode_list(&names, |_| true);
        assert_eq!(
            all,
            b"\x01a\x07example\x00\x02bb\x07example\x00\x01c\x07example\x00"
        );
        // The second name would make 23 octets: neither it nor the third, shorter, is there.
        assert_eq!(encode_list(&names, |len| len <= 22), &all[..11]);
        assert!(encode_list(&names, |_| false).is_empty());
    }

    #[test]
    fn name_decoding_rejects_loops_and_forward_pointers() {
        let decode_lossy = |data: &[u8], start| {
            decode(data, start, Pointers::Allowed).map(|(n, end)| (n.to_lossy_string(), end))
        };
        assert_eq!(decode_lossy(&[0xc0, 0], 0), None); // points at itself
        assert_eq!(decode_lossy(&[0xc0, 2, 0], 0), None); // forwards
        assert_eq!(decode_lossy(&[1, b'a', 0xc0, 0], 0), None); // a.a.a... until too long
        assert_eq!(decode_lossy(&[0x40, 0], 0), None); // reserved label type
        assert_eq!(decode_lossy(&[3, b'a'], 0), None); // truncated label
        assert_eq!(
            decode_lossy(&[1, b'a', 0, 1, b'b', 0xc0, 0], 3),
            Some(("b.a".to_owned(), 7))
        );
        // Refused, a pointer is malformed.
        assert_eq!(decode(&[1, b'b', 0xc0, 0], 0, Pointers::Refused), None);
    }

    #[test]
    fn partial_names_end_with_the_data() {
        let (name, end) = decode(b"\x02vm\x07example", 0, Pointers::Refused).unwrap();
        assert_eq!((name.to_string(), end), ("vm.example".to_owned(), 11));
        assert!(!name.is_fully_qualified());
        assert_eq!(decode(b"", 0, Pointers::Refused), None);
        assert_eq!(decode(b"\x01a", 2, Pointers::Allowed), None);
        assert_eq!(decode(b"\x01a", 7, Pointers::Allowed), None);
    }

    #[test]
    fn decoded_names_are_at_most_255_octets() {
        let label = |n: usize| [&[n as u8][..], &[b'x'; 63][..n]].concat();
        // 3 labels of 63 and one of 61, then the root: 255 octets.
        let mut name = [label(63), label(63), label(63), label(61)].concat();
        let partial = name.clone();
        name.push(0);
        assert_eq!(decode(&name, 0, Pointers::Refused).unwrap().1, 255);
        // One more octet of label: 256 with the root, 255 without.
        let mut long = [label(63), label(63), label(63), label(62)].concat();
        assert_eq!(decode(&long, 0, Pointers::Refused).unwrap().1, 255);
        long.push(0);
        assert_eq!(decode(&long, 0, Pointers::Refused), None);
        assert_eq!(decode(&long, 0, Pointers::Allowed), None);
        assert_eq!(decode(&partial, 0, Pointers::Refused).unwrap().1, 254);
    }

    /// Names that [`encode`] takes: 1 to 5 labels of 1 to 63 letters, digits and hyphens,
    /// at most 253 octets as text (255 in wire format).
    fn valid_name() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z0-9-]{1,63}", 1..=5)
            .prop_map(|labels| labels.join("."))
            .prop_filter("longer than 255 octets encoded", |n| n.len() <= 253)
    }

    proptest! {
        #[test]
        fn encoded_names_decode_to_themselves(name in valid_name(), fully_qualified in any::<bool>()) {
            let wire = encoded(&name, fully_qualified).unwrap();
            for pointers in [Pointers::Allowed, Pointers::Refused] {
                let (decoded, end) = decode(&wire, 0, pointers).unwrap();
                prop_assert_eq!(end, wire.len());
                prop_assert_eq!(decoded.is_fully_qualified(), fully_qualified);
                let labels: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
                prop_assert_eq!(decoded.labels().collect::<Vec<_>>(), labels);
                let dot = if fully_qualified { "." } else { "" };
                prop_assert_eq!(decoded.to_string(), format!("{name}{dot}"));
            }
        }

        #[test]
        fn encoded_lists_decode_to_themselves(names in proptest::collection::vec(valid_name(), 0..8)) {
            let mut unique: Vec<String> = Vec::new();
            for n in &names {
                if !unique.contains(n) {
                    unique.push(n.clone());
                }
            }
            prop_assert_eq!(lossy_names(&encode_compressed_list(&names)), unique);
            let plain = encode_list(&names, |_| true);
            let decoded: Vec<String> = Names::new(&plain, Pointers::Refused)
                .map(|n| n.unwrap().to_lossy_string())
                .collect();
            prop_assert_eq!(decoded, names);
        }

        #[test]
        fn decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), start in 0usize..610) {
            for pointers in [Pointers::Allowed, Pointers::Refused] {
                if let Some((name, end)) = decode(&data, start, pointers) {
                    prop_assert!(end > start && end <= data.len());
                    let wire_len: usize = name.labels().map(|l| l.len() + 1).sum::<usize>()
                        + usize::from(name.is_fully_qualified());
                    prop_assert!(wire_len <= MAX_NAME_LEN);
                    prop_assert!(name.labels().all(|l| (1..=MAX_LABEL_LEN).contains(&l.len())));
                    let _ = (name.to_string(), name.to_lossy_string());
                }
                let names = Names::new(&data, pointers);
                prop_assert!(names.clone().count() <= data.len());
                let _ = (names.to_string(), names.padded().to_string());
            }
        }
    }
}
