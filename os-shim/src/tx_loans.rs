//! The guest memory lent for the frames of one read from a vhost-user guest's transmit queue:
//! for each frame whose TCP payload was left in place, the areas of our address space that
//! payload lies in (see `sans_io::wire::external`). The host sockets hand the kernel an
//! [`ExternalPayload`] as an iovec only through this table, so that no other address can
//! reach a system call through the core's (safe) payload names; one not here is copied
//! through the link instead.

use std::cell::RefCell;

use sans_io::wire::external::ExternalPayload;
use sans_io::wire::lent::LentArea;

#[derive(Default)]
struct Lent {
    areas: Vec<LentArea>,
    /// Per frame of the read, its areas: `areas[start..end]`.
    frames: Vec<(usize, usize)>,
}

thread_local! {
    static LENT: RefCell<Lent> = RefCell::new(Lent::default());
}

/// `frames[i]` are the areas of frame `i`'s rest, lent from now on for reads until [`end`].
/// Allocates only while the table grows past what it held before.
///
/// # Safety
///
/// Every area must stay mapped and valid for reads of its length until [`end`] is called.
/// (The guest may write it meanwhile: nothing here or in the kernel's reads makes a Rust
/// reference to it.)
pub(crate) unsafe fn lend<'a>(frames: impl Iterator<Item = &'a [LentArea]>) {
    LENT.with_borrow_mut(|lent| {
        lent.areas.clear();
        lent.frames.clear();
        for areas in frames {
            let start = lent.areas.len();
            lent.areas.extend_from_slice(areas);
            lent.frames.push((start, lent.areas.len()));
        }
    });
}

/// Nothing is lent any more.
pub(crate) fn end() {
    LENT.with_borrow_mut(|lent| {
        lent.areas.clear();
        lent.frames.clear();
    });
}

/// Hands `push` the lent areas `payload` covers, in order, cut to it. False, with nothing
/// handed, if they aren't all lent (no such frame, or past its end).
pub(crate) fn areas_of(payload: ExternalPayload, mut push: impl FnMut(LentArea)) -> bool {
    LENT.with_borrow(|lent| {
        let Some(&(start, end)) = lent.frames.get(payload.frame as usize) else {
            return false;
        };
        let areas = &lent.areas[start..end];
        let held: usize = areas.iter().map(|a| a.len).sum();
        if payload.at.checked_add(payload.len).is_none_or(|e| e > held) {
            return false;
        }
        let (mut skip, mut left) = (payload.at, payload.len);
        for a in areas {
            if left == 0 {
                break;
            }
            if skip >= a.len {
                skip -= a.len;
                continue;
            }
            let n = (a.len - skip).min(left);
            push(LentArea {
                addr: a.addr + skip,
                len: n,
            });
            skip = 0;
            left -= n;
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(addr: usize, len: usize) -> LentArea {
        LentArea { addr, len }
    }

    fn resolved(p: ExternalPayload) -> Option<Vec<LentArea>> {
        let mut out = Vec::new();
        areas_of(p, |a| out.push(a)).then_some(out)
    }

    #[test]
    fn a_payload_resolves_to_the_lent_areas_it_covers_and_nothing_else() {
        let frame0 = [area(0x1000, 10), area(0x5000, 3), area(0x9000, 100)];
        let frame1 = [area(0x20000, 50)];
        // SAFETY: nothing reads these addresses: the table is only looked up.
        unsafe { lend([&frame0[..], &frame1[..]].into_iter()) };
        let p = |frame, at, len| ExternalPayload { frame, at, len };
        assert_eq!(resolved(p(0, 0, 113)).unwrap(), frame0.to_vec());
        assert_eq!(
            resolved(p(0, 7, 10)).unwrap(),
            vec![area(0x1007, 3), area(0x5000, 3), area(0x9000, 4)]
        );
        assert_eq!(resolved(p(1, 49, 1)).unwrap(), vec![area(0x20000 + 49, 1)]);
        assert_eq!(resolved(p(1, 0, 0)).unwrap(), vec![]);
        // Past a frame's end, a frame not lent, an overflowing range: refused.
        assert_eq!(resolved(p(0, 100, 14)), None);
        assert_eq!(resolved(p(1, 1, 50)), None);
        assert_eq!(resolved(p(2, 0, 1)), None);
        assert_eq!(resolved(p(0, usize::MAX, 2)), None);
        end();
        assert_eq!(resolved(p(0, 0, 1)), None, "nothing lent once ended");
    }
}
