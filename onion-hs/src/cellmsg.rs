//! Glue to `onion-cell`'s relay messages, so that the bodies built and checked here travel on
//! `onion-circuit` circuits (`Circuit::send_msg`, `CircEvent::Msg`).
//!
//! The onion-service messages are (relay command, body) pairs here; onion-cell owns their
//! framing inside relay cells. Tests check that every body this crate builds decodes with
//! onion-cell and re-encodes to the same bytes.

use onion_cell::{RelayCmd, RelayMsg};

/// Decode a body produced by this crate as an onion-cell relay message.
pub fn to_relay_msg(cmd: RelayCmd, body: &[u8]) -> Result<RelayMsg<'_>, onion_cell::Error> {
    RelayMsg::decode(cmd, body)
}

/// The body of an onion-cell relay message, for this crate's parsers (e.g. an INTRODUCE2 or
/// RENDEZVOUS2 from `CircEvent::Msg`).
pub fn body_of(msg: &RelayMsg<'_>) -> Result<Vec<u8>, onion_cell::Error> {
    let mut v = Vec::new();
    msg.encode_body(&mut v)?;
    Ok(v)
}
