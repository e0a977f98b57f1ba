//! The incremental decoder: bytes as they arrive in, one [`Event`] at a time out.
//!
//! It holds at most one item (a hello, a table header or a rule record) of partial input, so
//! a client can't make it buffer more; a count above [`MAX_RULES`] is refused before any rule
//! is read. An error is final: the decoder keeps returning it.

use super::record;
use super::{Caps, ControlError, Hello, Pif, HELLO_LEN, PIF_INFO_LEN, PIF_NAME_SIZE, RULE_LEN};
use crate::fwd::rule::{ForwardRule, MAX_RULES};

/// Which side's bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// What the server sends: the hello, then its tables with their pif infos.
    Listing,
    /// What a client sends to change the tables: tables with only a count.
    Update,
}

/// A table's header: which pif, how many rules follow and, in a listing, the server's name
/// and capabilities for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableHeader {
    pub pif: Pif,
    pub count: u32,
    /// `(name, caps)`, in a listing only.
    pub info: Option<(String, Caps)>,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Hello(Hello),
    Table(TableHeader),
    /// A rule of the last table announced.
    Rule(Pif, ForwardRule),
    /// The `u8 0` after the last table: the stream is complete.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Hello,
    PifOrEnd,
    Header(Pif),
    Rules { pif: Pif, left: u32 },
    Done,
    Failed(ControlError),
}

/// Decodes one direction of one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    stream: Stream,
    state: State,
    /// The bytes of the item in progress.
    buf: [u8; PIF_INFO_LEN],
    have: usize,
    /// Pifs seen so far (bit = pif number).
    seen: u8,
}

impl Decoder {
    pub fn new(stream: Stream) -> Decoder {
        let state = match stream {
            Stream::Listing => State::Hello,
            Stream::Update => State::PifOrEnd,
        };
        Decoder {
            stream,
            state,
            buf: [0; PIF_INFO_LEN],
            have: 0,
            seen: 0,
        }
    }

    /// Whether the end marker has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes the item in progress still needs (0 once done or failed): a reader can
    /// ask for no more than this, so it never reads past the end of the stream.
    pub fn wanted(&self) -> usize {
        self.item_len().map_or(0, |n| n - self.have)
    }

    fn item_len(&self) -> Option<usize> {
        match self.state {
            State::Hello => Some(HELLO_LEN),
            State::PifOrEnd => Some(1),
            State::Header(_) => Some(match self.stream {
                Stream::Listing => PIF_INFO_LEN,
                Stream::Update => 4,
            }),
            State::Rules { .. } => Some(RULE_LEN),
            State::Done | State::Failed(_) => None,
        }
    }

    /// Takes bytes from the front of `input` until one message is complete and returns it, or
    /// returns `None` when `input` is used up first. After [`Event::End`], any further byte
    /// is an error ([`ControlError::AfterEnd`]).
    pub fn next(&mut self, input: &mut &[u8]) -> Result<Option<Event>, ControlError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let result = self.step(input);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<Option<Event>, ControlError> {
        loop {
            let Some(len) = self.item_len() else {
                return if input.is_empty() {
                    Ok(None)
                } else {
                    Err(ControlError::AfterEnd)
                };
            };
            let take = (len - self.have).min(input.len());
            self.buf[self.have..self.have + take].copy_from_slice(&input[..take]);
            self.have += take;
            *input = &input[take..];
            if self.have < len {
                return Ok(None);
            }
            self.have = 0;
            if let Some(event) = self.item(len)? {
                return Ok(Some(event));
            }
        }
    }

    /// Acts on the complete item in `buf[..len]`: the next state, and the event if the item
    /// makes one (a pif byte alone does not).
    fn item(&mut self, len: usize) -> Result<Option<Event>, ControlError> {
        let item = &self.buf[..len];
        let (next, event) = match self.state {
            State::Hello => {
                let mut bytes = [0; HELLO_LEN];
                bytes.copy_from_slice(&self.buf[..HELLO_LEN]);
                (State::PifOrEnd, Some(Event::Hello(Hello::decode(&bytes)?)))
            }
            State::PifOrEnd => match item[0] {
                0 => (State::Done, Some(Event::End)),
                n => {
                    let pif = Pif::from_number(n).ok_or(ControlError::UnknownPif(n))?;
                    if self.seen & (1 << n) != 0 {
                        return Err(ControlError::DuplicatePif(pif));
                    }
                    self.seen |= 1 << n;
                    (State::Header(pif), None)
                }
            },
            State::Header(pif) => {
                let word = |at: usize| {
                    u32::from_be_bytes([item[at], item[at + 1], item[at + 2], item[at + 3]])
                };
                let (count, info) = match self.stream {
                    Stream::Listing => {
                        let name = record::field_name(
                            &item[..PIF_NAME_SIZE],
                            ControlError::PifNameNotTerminated,
                        )?
                        .unwrap_or_default();
                        let caps = Caps(word(PIF_NAME_SIZE));
                        (word(PIF_NAME_SIZE + 4), Some((name, caps)))
                    }
                    Stream::Update => (word(0), None),
                };
                if count as usize > MAX_RULES {
                    return Err(ControlError::TooManyRules(count));
                }
                let next = if count == 0 {
                    State::PifOrEnd
                } else {
                    State::Rules { pif, left: count }
                };
                (next, Some(Event::Table(TableHeader { pif, count, info })))
            }
            State::Rules { pif, left } => {
                let mut bytes = [0; RULE_LEN];
                bytes.copy_from_slice(&self.buf[..RULE_LEN]);
                let rule = record::decode(&bytes)?;
                let next = if left > 1 {
                    State::Rules {
                        pif,
                        left: left - 1,
                    }
                } else {
                    State::PifOrEnd
                };
                (next, Some(Event::Rule(pif, rule)))
            }
            State::Done | State::Failed(_) => return Err(ControlError::AfterEnd),
        };
        self.state = next;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::arb_rule;
    use super::super::{
        encode_listing, encode_listing_table, encode_update_table, write_end, ReceivedTable,
        TablesBuilder,
    };
    use super::*;
    use crate::flow::Proto;
    use proptest::prelude::*;

    fn all(stream: Stream, bytes: &[u8]) -> Result<Vec<Event>, ControlError> {
        let mut d = Decoder::new(stream);
        let mut input = bytes;
        let mut events = Vec::new();
        while let Some(e) = d.next(&mut input)? {
            events.push(e);
        }
        assert!(input.is_empty());
        Ok(events)
    }

    /// A pasta listing by hand: `HOST` with one rule, `SPLICE` empty.
    fn listing_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"basil:s\0\0\0\0\x02\0\0\0\x80\0\0\0\x10");
        b.push(1);
        let mut name = [0u8; 128];
        name[..4].copy_from_slice(b"HOST");
        b.extend_from_slice(&name);
        b.extend_from_slice(&[0, 0, 0, 0x3f, 0, 0, 0, 1]); // caps all, count 1
        let mut rule = [0u8; 56];
        rule[48..56].copy_from_slice(&[0x1f, 0x90, 0x1f, 0x90, 0, 80, 6, 1]);
        b.extend_from_slice(&rule);
        b.push(3);
        let mut name = [0u8; 128];
        name[..6].copy_from_slice(b"SPLICE");
        b.extend_from_slice(&name);
        b.extend_from_slice(&[0, 0, 0, 0x1c, 0, 0, 0, 0]);
        b.push(0);
        b
    }

    fn host_rule() -> ForwardRule {
        ForwardRule {
            to: 80,
            ..ForwardRule::ports(Proto::Tcp, 8080, 8080)
        }
    }

    #[test]
    fn a_hand_built_listing() {
        let events = all(Stream::Listing, &listing_bytes()).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Hello(Hello::ours()),
                Event::Table(TableHeader {
                    pif: Pif::Host,
                    count: 1,
                    info: Some(("HOST".into(), Caps(0x3f))),
                }),
                Event::Rule(Pif::Host, host_rule()),
                Event::Table(TableHeader {
                    pif: Pif::Splice,
                    count: 0,
                    info: Some(("SPLICE".into(), Caps(0x1c))),
                }),
                Event::End,
            ]
        );
        // Our encoders write the same bytes.
        let mut ours = Hello::ours().encode().to_vec();
        encode_listing_table(Pif::Host, "HOST", Caps(0x3f), &[host_rule()], &mut ours).unwrap();
        encode_listing_table(Pif::Splice, "SPLICE", Caps(0x1c), &[], &mut ours).unwrap();
        write_end(&mut ours);
        assert_eq!(ours, listing_bytes());
        let mut whole = Vec::new();
        encode_listing(
            &[
                (Pif::Host, Caps(0x3f), &[host_rule()][..]),
                (Pif::Splice, Caps(0x1c), &[]),
            ],
            &mut whole,
        )
        .unwrap();
        assert_eq!(whole, listing_bytes());
    }

    #[test]
    fn a_hand_built_update_one_byte_at_a_time() {
        let mut b = vec![1, 0, 0, 0, 1];
        let mut rule = [0u8; 56];
        rule[48..56].copy_from_slice(&[0x1f, 0x90, 0x1f, 0x90, 0, 80, 6, 1]);
        b.extend_from_slice(&rule);
        b.push(0);
        let mut builder = TablesBuilder::new(Stream::Update);
        for (i, byte) in b.iter().enumerate() {
            assert!(builder.wanted() > 0);
            let done = builder.feed(std::slice::from_ref(byte)).unwrap();
            assert_eq!(done, i == b.len() - 1);
        }
        assert_eq!(builder.wanted(), 0);
        assert_eq!(
            builder.into_tables(),
            vec![ReceivedTable {
                pif: Pif::Host,
                info: None,
                rules: vec![host_rule()],
            }]
        );
        // As a server takes it: identical rules are one, overlapping ones an error.
        let twice = ReceivedTable {
            pif: Pif::Host,
            info: None,
            rules: vec![host_rule(), host_rule()],
        };
        assert_eq!(twice.to_table().unwrap().rules(), [host_rule()]);
        let overlapping = ReceivedTable {
            rules: vec![host_rule(), ForwardRule::ports(Proto::Tcp, 8000, 9000)],
            ..twice
        };
        assert!(matches!(
            overlapping.to_table(),
            Err(crate::fwd::rule::RuleError::Conflict(..))
        ));
        let mut ours = Vec::new();
        encode_update_table(Pif::Host, &[host_rule()], &mut ours).unwrap();
        write_end(&mut ours);
        assert_eq!(ours, b);
    }

    #[test]
    fn bounds_and_framing_errors() {
        assert_eq!(
            all(Stream::Update, &[1, 0, 0, 1, 1]),
            Err(ControlError::TooManyRules(257))
        );
        assert_eq!(all(Stream::Update, &[4]), Err(ControlError::UnknownPif(4)));
        assert_eq!(
            all(Stream::Update, &[1, 0, 0, 0, 0, 1]),
            Err(ControlError::DuplicatePif(Pif::Host))
        );
        assert_eq!(all(Stream::Update, &[0, 0]), Err(ControlError::AfterEnd));
        let mut unterminated = listing_bytes();
        unterminated[21..149].fill(b'A');
        assert_eq!(
            all(Stream::Listing, &unterminated),
            Err(ControlError::PifNameNotTerminated)
        );
        // An error is final.
        let mut d = Decoder::new(Stream::Update);
        assert!(d.next(&mut &[9u8][..]).is_err());
        assert_eq!(d.next(&mut &[0u8][..]), Err(ControlError::UnknownPif(9)));
        assert_eq!(d.wanted(), 0);
        // Partial input is no error, and asks for exactly the rest of the item.
        let mut d = Decoder::new(Stream::Listing);
        assert_eq!(d.next(&mut &b"basil"[..]), Ok(None));
        assert_eq!(d.wanted(), HELLO_LEN - 5);
    }

    fn arb_tables() -> impl Strategy<Value = Vec<(Pif, Vec<ForwardRule>)>> {
        proptest::sample::subsequence(Pif::ALL.to_vec(), 0..=3).prop_flat_map(|pifs| {
            let n = pifs.len();
            proptest::collection::vec(proptest::collection::vec(arb_rule(), 0..5), n)
                .prop_map(move |tables| pifs.iter().copied().zip(tables).collect::<Vec<_>>())
        })
    }

    proptest! {
        #[test]
        fn streams_round_trip_in_any_chunks(
            tables in arb_tables(),
            listing in any::<bool>(),
            chunk in 1usize..200,
        ) {
            let mut bytes = Vec::new();
            if listing {
                bytes.extend_from_slice(&Hello::ours().encode());
            }
            for (pif, rules) in &tables {
                if listing {
                    encode_listing_table(*pif, pif.name(), Caps(0x3f), rules, &mut bytes).unwrap();
                } else {
                    encode_update_table(*pif, rules, &mut bytes).unwrap();
                }
            }
            write_end(&mut bytes);
            let stream = if listing { Stream::Listing } else { Stream::Update };
            let mut builder = TablesBuilder::new(stream);
            for piece in bytes.chunks(chunk) {
                prop_assert!(!builder.is_done());
                builder.feed(piece).unwrap();
            }
            prop_assert!(builder.is_done());
            prop_assert_eq!(builder.hello().is_some(), listing);
            let got: Vec<_> = builder.into_tables().into_iter().map(|t| {
                let info = t.info.clone();
                (t.pif, t.rules, info)
            }).collect();
            let expected: Vec<_> = tables.into_iter().map(|(pif, rules)| {
                let info = listing.then(|| (pif.name().to_owned(), Caps(0x3f)));
                (pif, rules, info)
            }).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
