//! Messages into a caller's buffer. The server writes its hello
//! ([`Hello::encode`](super::Hello::encode)), one [`encode_listing_table`] per table and
//! [`write_end`]; a client one [`encode_update_table`] per table and [`write_end`].

use super::record::{self, RecordError};
use super::{Caps, Pif, PIF_NAME_SIZE, RULE_LEN};
use crate::fwd::rule::{ForwardRule, MAX_RULES};

/// Why tables can't be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("Too many rules (maximum {MAX_RULES})")]
    TooManyRules,
    #[error("Pif name '{0}' is too long")]
    PifName(String),
}

fn put_rules(rules: &[ForwardRule], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut rec = [0; RULE_LEN];
    for rule in rules {
        record::encode(rule, &mut rec)?;
        out.extend_from_slice(&rec);
    }
    Ok(())
}

fn count(rules: &[ForwardRule]) -> Result<u32, EncodeError> {
    match u32::try_from(rules.len()) {
        Ok(n) if rules.len() <= MAX_RULES => Ok(n),
        _ => Err(EncodeError::TooManyRules),
    }
}

/// Appends one table of a listing: pif, `{name, caps, count}`, the rules. On error `out` is
/// left as it was.
pub fn encode_listing_table(
    pif: Pif,
    name: &str,
    caps: Caps,
    rules: &[ForwardRule],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n = count(rules)?;
    if name.len() >= PIF_NAME_SIZE || name.as_bytes().contains(&0) {
        return Err(EncodeError::PifName(name.to_owned()));
    }
    let start = out.len();
    out.push(pif.number());
    let mut field = [0; PIF_NAME_SIZE];
    field[..name.len()].copy_from_slice(name.as_bytes());
    out.extend_from_slice(&field);
    out.extend_from_slice(&caps.0.to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    put_rules(rules, out).inspect_err(|_| out.truncate(start))
}

/// Appends one table of an update: pif, count, the rules. On error `out` is left as it was.
pub fn encode_update_table(
    pif: Pif,
    rules: &[ForwardRule],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n = count(rules)?;
    let start = out.len();
    out.push(pif.number());
    out.extend_from_slice(&n.to_be_bytes());
    put_rules(rules, out).inspect_err(|_| out.truncate(start))
}

/// Appends what a server sends a new client: the hello, every table of `tables` (pif, caps,
/// rules) under its C name, and the end. On error `out` is left as it was.
pub fn encode_listing(
    tables: &[(Pif, Caps, &[ForwardRule])],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&super::Hello::ours().encode());
    for (pif, caps, rules) in tables {
        encode_listing_table(*pif, pif.name(), *caps, rules, out)
            .inspect_err(|_| out.truncate(start))?;
    }
    write_end(out);
    Ok(())
}

/// Appends the end of the tables (`PIF_NONE`).
pub fn write_end(out: &mut Vec<u8>) {
    out.push(0);
}
