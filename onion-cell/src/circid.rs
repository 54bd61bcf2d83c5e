//! Circuit identifiers (tor-spec §3 "CircID", §5.1.1 "Choosing circuit IDs").
//!
//! A circuit id is 2 bytes on link protocols 1–3 (and on every VERSIONS cell) and 4 bytes
//! from link protocol 4 on. It is stored here as a `u32` whatever its wire width; the
//! [`crate::codec::CellFormat`] decides how many bytes go on the wire. Id 0 is reserved for
//! cells that belong to no circuit (VERSIONS, CERTS, NETINFO, PADDING, ...).

use core::fmt;

/// A circuit id as carried in a channel cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CircId(u32);

impl CircId {
    /// The id of cells that belong to no circuit (tor-spec §5.1.1).
    pub const ZERO: CircId = CircId(0);

    /// Wraps a raw id.
    pub const fn new(id: u32) -> Self {
        CircId(id)
    }

    /// The raw id.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// True for id 0, which no circuit may use.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// True when the most significant bit of a 4-byte id is set: from link protocol 4 on,
    /// the initiator of the connection sets it and the responder clears it (§5.1.1).
    pub const fn high_bit_set(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
}

impl From<u32> for CircId {
    fn from(v: u32) -> Self {
        CircId(v)
    }
}

impl From<CircId> for u32 {
    fn from(v: CircId) -> Self {
        v.0
    }
}

impl fmt::Display for CircId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
