//! The HSDir hash ring, rend-spec-v3 §2.2.3 \[WHERE-HSDESC\], and the choice of time period and
//! shared random value for fetching and uploading, §2.2.4 \[FETCHUPLOADDESC\] and §2.3.1.
//!
//! The ring takes relays as plain [`HsDirRelay`] values (identities and the HSDir flag) so that
//! it does not depend on any particular consensus type.

use onion_crypto::RsaIdentity;
use onion_dir::Timestamp;

use crate::keys::HsBlindedKey;
use crate::ops::sha3_256;
use crate::time::{TimePeriod, TimePeriodConfig};

/// `hs_service_index(replica) = H("store-at-idx" | blinded | INT_8(replica) | INT_8(period_length) | INT_8(period_num))`.
pub fn hs_index(blinded: &HsBlindedKey, replica: u8, period: TimePeriod) -> [u8; 32] {
    hs_index_raw(blinded.as_bytes(), replica, period)
}

/// [`hs_index`] over raw key bytes (the formula only hashes them; C tor's own test vector uses
/// bytes that are not a curve point).
pub fn hs_index_raw(blinded: &[u8; 32], replica: u8, period: TimePeriod) -> [u8; 32] {
    sha3_256(&[
        b"store-at-idx",
        blinded,
        &u64::from(replica).to_be_bytes(),
        &u64::from(period.length_minutes()).to_be_bytes(),
        &period.num().to_be_bytes(),
    ])
}

/// `hs_relay_index(node) = H("node-idx" | ed25519_id | srv | INT_8(period_num) | INT_8(period_length))`.
/// Note the order of period number and length differs from [`hs_index`].
pub fn hsdir_index(ed25519_id: &[u8; 32], srv: &[u8; 32], period: TimePeriod) -> [u8; 32] {
    sha3_256(&[
        b"node-idx",
        ed25519_id,
        srv,
        &period.num().to_be_bytes(),
        &u64::from(period.length_minutes()).to_be_bytes(),
    ])
}

/// `SRV = H("shared-random-disaster" | INT_8(period_length) | INT_8(period_num))`, used when the
/// consensus lacks the wanted shared random value (rend-spec-v3 §2.3.1).
pub fn disaster_srv(period: TimePeriod) -> [u8; 32] {
    sha3_256(&[
        b"shared-random-disaster",
        &u64::from(period.length_minutes()).to_be_bytes(),
        &period.num().to_be_bytes(),
    ])
}

/// A relay as the hash ring sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsDirRelay {
    /// Ed25519 identity (`node_identity` of the spec).
    pub ed25519_id: [u8; 32],
    /// RSA identity fingerprint (carried along to identify the relay; not hashed).
    pub rsa_id: RsaIdentity,
    /// Whether the consensus gives it the HSDir flag; relays without it are not on the ring.
    pub is_hsdir: bool,
}

/// Consensus parameters of the ring (param-spec: `hsdir_n_replicas`, `hsdir_spread_fetch`,
/// `hsdir_spread_store`), with their defaults and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsDirParams {
    /// Replicas, 1..=16, default 2.
    pub n_replicas: u8,
    /// Directories per replica a client may fetch from, 1..=128, default 3.
    pub spread_fetch: u8,
    /// Directories per replica a service uploads to, 1..=128, default 4.
    pub spread_store: u8,
}

impl Default for HsDirParams {
    fn default() -> Self {
        HsDirParams {
            n_replicas: 2,
            spread_fetch: 3,
            spread_store: 4,
        }
    }
}

impl HsDirParams {
    /// From consensus parameters, given a lookup by name; out-of-range values fall back to the
    /// default, as C tor's `networkstatus_get_param` does.
    pub fn from_consensus(get: impl Fn(&str) -> Option<i64>) -> Self {
        let d = HsDirParams::default();
        let pick = |name: &str, def: u8, max: i64| -> u8 {
            get(name)
                .filter(|v| (1..=max).contains(v))
                .and_then(|v| u8::try_from(v).ok())
                .unwrap_or(def)
        };
        HsDirParams {
            n_replicas: pick("hsdir_n_replicas", d.n_replicas, 16),
            spread_fetch: pick("hsdir_spread_fetch", d.spread_fetch, 128),
            spread_store: pick("hsdir_spread_store", d.spread_store, 128),
        }
    }
}

/// The ring for one (time period, SRV): HSDir relays sorted by their `hs_relay_index`.
#[derive(Debug, Clone)]
pub struct HashRing {
    period: TimePeriod,
    /// (index, position of the relay in the caller's list), sorted.
    entries: Vec<([u8; 32], usize)>,
}

impl HashRing {
    /// Build the ring from the relays with the HSDir flag.
    pub fn new(relays: &[HsDirRelay], srv: &[u8; 32], period: TimePeriod) -> Self {
        let mut entries: Vec<([u8; 32], usize)> = relays
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_hsdir)
            .map(|(i, r)| (hsdir_index(&r.ed25519_id, srv, period), i))
            .collect();
        entries.sort_unstable();
        // Identical identities would sit at the same index: keep one.
        entries.dedup_by(|a, b| a.0 == b.0);
        HashRing { period, entries }
    }

    /// Number of relays on the ring.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The responsible directories for `blinded`: for each replica, the `spread` relays whose
    /// indices follow `hs_index(replica)`, skipping relays already chosen for lower replicas.
    /// Returns positions in the relay list given to [`HashRing::new`], in selection order.
    pub fn responsible(&self, blinded: &HsBlindedKey, n_replicas: u8, spread: u8) -> Vec<usize> {
        let n = self.entries.len();
        let mut out: Vec<usize> = Vec::new();
        for replica in 1..=n_replicas {
            let idx = hs_index(blinded, replica, self.period);
            // First entry strictly greater than idx (wrapping).
            let start = self.entries.partition_point(|e| e.0 <= idx);
            let mut taken = 0u8;
            for k in 0..n {
                if taken == spread {
                    break;
                }
                let (_, relay) = self.entries[(start + k) % n];
                if out.contains(&relay) {
                    continue;
                }
                out.push(relay);
                taken += 1;
            }
        }
        out
    }
}

/// Shared random values of a consensus (`shared-rand-current-value`,
/// `shared-rand-previous-value`), either of which may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedRandom {
    /// The current SRV.
    pub current: Option<[u8; 32]>,
    /// The previous SRV.
    pub previous: Option<[u8; 32]>,
}

/// A (time period, SRV) pair selecting one hash ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSelector {
    /// The time period whose blinded key is looked up.
    pub period: TimePeriod,
    /// The shared random value for relay indices.
    pub srv: [u8; 32],
}

impl SharedRandom {
    fn current_or_disaster(&self, p: TimePeriod) -> [u8; 32] {
        self.current.unwrap_or_else(|| disaster_srv(p))
    }
    fn previous_or_disaster(&self, p: TimePeriod) -> [u8; 32] {
        self.previous.unwrap_or_else(|| disaster_srv(p))
    }

    /// What a client fetches with (§2.2.4.1 \[CLIENTFETCH\]): the current period, and the current
    /// SRV between a new period and a new SRV, else the previous SRV.
    pub fn client_fetch(&self, cfg: &TimePeriodConfig, valid_after: Timestamp) -> RingSelector {
        let period = cfg.period_at(valid_after);
        let srv = if cfg.between_tp_and_srv(valid_after) {
            self.current_or_disaster(period)
        } else {
            self.previous_or_disaster(period)
        };
        RingSelector { period, srv }
    }

    /// What a service uploads its first and second descriptors with (§2.2.4.2.1–2
    /// \[FIRSTDESCUPLOAD\], \[SECONDDESCUPLOAD\]).
    pub fn service_upload(
        &self,
        cfg: &TimePeriodConfig,
        valid_after: Timestamp,
    ) -> [RingSelector; 2] {
        let cur = cfg.period_at(valid_after);
        if cfg.between_tp_and_srv(valid_after) {
            let prev = cur.prev();
            [
                RingSelector {
                    period: prev,
                    srv: self.previous_or_disaster(prev),
                },
                RingSelector {
                    period: cur,
                    srv: self.current_or_disaster(cur),
                },
            ]
        } else {
            let next = cur.next();
            [
                RingSelector {
                    period: cur,
                    srv: self.previous_or_disaster(cur),
                },
                RingSelector {
                    period: next,
                    srv: self.current_or_disaster(next),
                },
            ]
        }
    }
}
