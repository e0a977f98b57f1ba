//! Payload memory a driver lends the frame queue: where a link can take frames whose payload
//! is already in place (a vhost-user guest's receive buffers), the core peeks host data
//! straight into that memory and queues only the headers, with the payload's length and a
//! ticket the link publishes the frame by ([`crate::wire::FrameQueue::push_lent`]).
//!
//! The core never touches the memory: it hands the areas to the host sockets' peek
//! ([`crate::flow::StreamSockets::peek_lent`]), whose OS implementation gives them to the
//! kernel as an iovec (checking first that they are what its lender lent), and whose default
//! copies through [`LentAreas::fill`], which the lender does with checked accesses. Without
//! a lender (pasta's tap, passt's stream socket, captures) the queue builds every frame in
//! its own buffer.

/// Areas one reservation lends at most (one vectored peek's iovec; the kernel takes 1024).
pub const MAX_LENT_AREAS: usize = 256;
/// Frames one reservation covers at most.
pub const MAX_LENT_FRAMES: usize = 64;

/// `len` bytes at address `addr` of the driver's address space, lent until the lender's next
/// call. Only an address: nothing here reads or writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LentArea {
    pub addr: usize,
    pub len: usize,
}

/// A lent payload as the queue holds it: its length, the ticket the lender gave it, and the
/// segment size of a TCP payload longer than one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LentPayload {
    pub len: usize,
    pub ticket: u64,
    /// For a payload longer than this (0: none is), the size of the segments the guest is to
    /// take it as (see [`PayloadLender::large_tcp_segments`]): its stack's receive offload
    /// would have merged them so.
    pub segment_size: u16,
}

/// What lends payload memory to a [`crate::wire::FrameQueue`] (the vhost-user link's receive
/// queue). Reserve, fill, settle: the queue calls [`PayloadLender::settle`] after every
/// reservation that lent something, before anything else.
pub trait PayloadLender {
    /// Room for frames of `header_room` bytes of headers and then `lens[i]` bytes of payload,
    /// as many of them (from the first) as there is room for: their payload areas are
    /// appended to `areas` in order (frame 0's first, each frame's adding up to its length,
    /// [`MAX_LENT_AREAS`] at most). Returns how many frames; 0 for none (the queue builds
    /// them itself then).
    fn reserve(&mut self, header_room: usize, lens: &[usize], areas: &mut Vec<LentArea>) -> usize;

    /// Whether a TCP frame in lent memory may carry more than one segment's payload, up to
    /// what one IP packet holds: the guest takes it whole, told the segment size, as its own
    /// receive offload would have merged the segments (vhost-user's GUEST_TSO4/6). Fewer,
    /// larger frames are what a guest at a small MTU is slow at otherwise. `ipv6`: for that
    /// family, else IPv4.
    fn large_tcp_segments(&self, ipv6: bool) -> bool {
        let _ = ipv6;
        false
    }

    /// Copies `data` into the reservation's payload areas, `at` bytes from the start of the
    /// first (for socket layers that can't hand the areas to the system).
    fn fill(&mut self, at: usize, data: &[u8]);

    /// The frames of the last reservation got `filled[i]` bytes of payload, the first ones
    /// full, 0 for a frame not sent: those with bytes are to be published in order, with
    /// consecutive tickets from the one returned; the rest of the room is the lender's again.
    fn settle(&mut self, filled: &[usize]) -> u64;
}

/// The areas of a reservation under way, as a peek sees them.
pub struct LentAreas<'a> {
    areas: &'a [LentArea],
    lender: &'a mut dyn PayloadLender,
}

impl<'a> LentAreas<'a> {
    pub(crate) fn new(areas: &'a [LentArea], lender: &'a mut dyn PayloadLender) -> Self {
        LentAreas { areas, lender }
    }

    /// The areas, in the order they fill.
    pub fn areas(&self) -> &[LentArea] {
        self.areas
    }

    /// Their bytes, over all.
    pub fn total(&self) -> usize {
        self.areas.iter().map(|a| a.len).sum()
    }

    /// Copies `data` in, `at` bytes from the start of the first area.
    pub fn fill(&mut self, at: usize, data: &[u8]) {
        self.lender.fill(at, data);
    }
}
