//! The areas of guest memory lent for the peek under way: what a vhost-user lender reserved
//! (and keeps mapped) until it settles. The host sockets hand lent areas to the kernel as an
//! iovec only if they are exactly these, so that no other address can reach a system call
//! through the core's (safe) `LentArea`s.

use std::cell::RefCell;

use sans_io::wire::lent::LentArea;

thread_local! {
    static LENT: RefCell<Vec<LentArea>> = const { RefCell::new(Vec::new()) };
}

/// `areas` are lent from now on, valid for writes, until [`end`].
///
/// # Safety
///
/// Every area must stay valid for writes of its length until [`end`] is called, and nothing
/// in this process may hold a reference to it meanwhile.
pub(crate) unsafe fn lend(areas: &[LentArea]) {
    LENT.with_borrow_mut(|lent| {
        lent.clear();
        lent.extend_from_slice(areas);
    });
}

/// Nothing is lent any more.
pub(crate) fn end() {
    LENT.with_borrow_mut(Vec::clear);
}

/// Whether `areas` are what is lent now.
pub(crate) fn are_lent(areas: &[LentArea]) -> bool {
    !areas.is_empty() && LENT.with_borrow(|lent| lent.as_slice() == areas)
}
