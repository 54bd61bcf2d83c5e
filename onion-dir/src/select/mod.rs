//! Choosing relays: paths (path-spec §2.2), entry guards (guard-spec §4) and the layer-2
//! vanguards of onion-service circuits (proposal 333).
//!
//! Each module works on a [`NetView`](crate::netview::NetView) and the caller's RNG:
//!
//! | module | chooses |
//! |---|---|
//! | [`path`] | the hops of one circuit: exit first, then guard, then middles |
//! | [`guard`] | the entry guards a client keeps across circuits, with their persistent state |
//! | [`vanguards`] | the second hop of onion-service circuits from a rotating layer-2 set |

pub mod guard;
pub mod path;
pub mod vanguards;
