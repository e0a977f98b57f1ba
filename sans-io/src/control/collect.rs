//! Whole tables out of a stream of [`Event`]s, for callers that want them at once.

use super::{Caps, ControlError, Decoder, Event, Hello, Pif, Stream};
use crate::fwd::rule::{ForwardRule, ForwardTable, RuleError};

/// One table as received, its rules in order and unchecked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedTable {
    pub pif: Pif,
    /// The server's name and capabilities for it (listings only).
    pub info: Option<(String, Caps)>,
    pub rules: Vec<ForwardRule>,
}

impl ReceivedTable {
    /// The rules as a table, added one by one as a server takes a client's update: a rule
    /// identical to an earlier one is no error, an overlapping one is (the first error stops).
    pub fn to_table(&self) -> Result<ForwardTable, RuleError> {
        let mut table = ForwardTable::new();
        for rule in &self.rules {
            table.add(rule.clone())?;
        }
        Ok(table)
    }
}

/// Feeds a [`Decoder`] and gathers its events into tables.
#[derive(Debug, Clone)]
pub struct TablesBuilder {
    decoder: Decoder,
    hello: Option<Hello>,
    tables: Vec<ReceivedTable>,
}

impl TablesBuilder {
    pub fn new(stream: Stream) -> TablesBuilder {
        TablesBuilder {
            decoder: Decoder::new(stream),
            hello: None,
            tables: Vec::new(),
        }
    }

    /// See [`Decoder::wanted`].
    pub fn wanted(&self) -> usize {
        self.decoder.wanted()
    }

    /// Takes all of `input`; `true` once the end marker is in.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<bool, ControlError> {
        while let Some(event) = self.decoder.next(&mut input)? {
            match event {
                Event::Hello(h) => self.hello = Some(h),
                Event::Table(h) => self.tables.push(ReceivedTable {
                    pif: h.pif,
                    info: h.info,
                    rules: Vec::with_capacity(h.count as usize),
                }),
                Event::Rule(_, rule) => {
                    if let Some(t) = self.tables.last_mut() {
                        t.rules.push(rule);
                    }
                }
                Event::End => {}
            }
        }
        Ok(self.decoder.is_done())
    }

    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// The hello (listings), once received.
    pub fn hello(&self) -> Option<Hello> {
        self.hello
    }

    /// The tables received so far (all of them once [`is_done`](Self::is_done)).
    pub fn tables(&self) -> &[ReceivedTable] {
        &self.tables
    }

    pub fn into_tables(self) -> Vec<ReceivedTable> {
        self.tables
    }
}
