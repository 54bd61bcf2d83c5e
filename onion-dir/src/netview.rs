//! A compact view of the network, prepared for fast path selection (path-spec §2.2, §5.1).
//!
//! A [`NetView`] holds one [`RelayRecord`] per usable relay (a relay is usable only when we
//! have the descriptor that carries its keys, family and exit policy: a microdescriptor, or a
//! server descriptor in full-descriptor mode), the consensus `bandwidth-weights`
//! ([`BandwidthWeights`], dir-spec §3.4.1 "bandwidth-weights", path-spec §2.2), and tables
//! precomputed once so that one weighted choice is a binary search:
//!
//! * for each [`WeightRole`] (guard, middle, exit, directory) the relays that may ever take that
//!   role, with the cumulative sums of their weighted bandwidth;
//! * for each relay, the relays that are in its family *mutually* (dir-spec §2.1.1 "family": two
//!   relays are in the same family only if each lists the other), as sorted indices;
//! * for each relay, its "happy family" groups (Tor proposal 321, C tor 0.4.9: the
//!   microdescriptor `family-ids` line): every family ID shared by two relays or more is
//!   interned once to a small group index, and each relay keeps the sorted list of its groups.
//!   Two relays are in one family if they list each other *or* share a group. Shared IDs are
//!   never expanded into member lists, so a consensus where thousands of relays share one ID
//!   costs memory linear in its size, not quadratic;
//! * for each relay, its IPv4 /16 and IPv6 /32 prefix (path-spec §2.2).
//!
//! The view can be built from plain records ([`NetView::from_records`], for tests, simulations
//! and embedders with their own document store) and from parsed directory documents (see the
//! constructors in this crate's document modules).

use std::collections::HashMap;
use std::net::{SocketAddrV4, SocketAddrV6};

use rand_core::CryptoRngCore;

use crate::consensus::{BandwidthWeights, Consensus, RouterStatus};
use crate::ids::{Ed25519Identity, MdDigest};
use crate::ids::{RelayFlags, RsaIdentity};
use crate::microdesc::Microdesc;
use crate::policy::{PortSet, RelayPolicy};
use crate::routerdesc::RouterDesc;

/// The most relays a view accepts. Ten times today's network is about 70,000; this bound
/// keeps every weight sum far from `u64` overflow (see [`MAX_RELAY_WEIGHT`]).
pub const MAX_RELAYS: usize = 1 << 20;

/// The largest weighted bandwidth one relay may contribute to a position, so that the sum over
/// [`MAX_RELAYS`] relays always fits in a `u64`.
pub const MAX_RELAY_WEIGHT: u64 = 1 << 43;

/// The most family entries kept per relay (dir-spec §2.1.1 sets no bound; real families have
/// under 100 members, and a longer list only costs the lister). The same bound applies to a
/// relay's family IDs (proposal 321), of which real relays have one.
pub const MAX_FAMILY_ENTRIES: usize = 1024;

// Per-relay family and family-ID list lengths are stored as u16 in the hot table.
const _: () = assert!(MAX_FAMILY_ENTRIES <= u16::MAX as usize);

/// The most exit policy rules kept per relay in full-descriptor mode.
pub const MAX_POLICY_RULES: usize = 4096;

/// One relay as path selection sees it: identities, addresses, flags, consensus weight,
/// declared family and exit policy.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RelayRecord {
    /// The relay's nickname (dir-spec §3.4.1 "r").
    pub nickname: String,
    /// RSA identity fingerprint.
    pub rsa_id: RsaIdentity,
    /// Ed25519 identity, when known (microdescriptor `id ed25519`).
    pub ed_id: Option<[u8; 32]>,
    /// The curve25519 key for the ntor handshake (`ntor-onion-key`), when known.
    pub ntor_onion_key: Option<[u8; 32]>,
    /// IPv4 address and ORPort (consensus `r` line).
    pub ipv4: Option<SocketAddrV4>,
    /// IPv6 address and ORPort (consensus `a` line).
    pub ipv6: Option<SocketAddrV6>,
    /// Consensus flags.
    pub flags: RelayFlags,
    /// Consensus `w Bandwidth=` value (path-spec §1.2), in the consensus' arbitrary unit.
    pub bandwidth: u32,
    /// The fingerprints the relay lists in its `family` line (a [`NetView`] keeps them
    /// sorted and deduplicated).
    pub family: Vec<RsaIdentity>,
    /// The relay's family IDs: the tokens of its microdescriptor `family-ids` line (Tor
    /// proposal 321 "happy families", C tor 0.4.9), such as `ed25519:<base64>`. They are
    /// opaque and compared as exact strings; two relays sharing one are in the same family
    /// even if neither lists the other. A [`NetView`] keeps them sorted and deduplicated and
    /// refuses more than [`MAX_FAMILY_ENTRIES`] ([`NetViewError::FamilyIdsTooLong`]) rather
    /// than truncating, since dropping the one shared ID would let two relays of a family
    /// share a circuit.
    pub family_ids: Vec<String>,
    /// The exit policy.
    pub policy: RelayPolicy,
}

impl Default for RelayRecord {
    /// An empty record (all-zero identity, no addresses, no flags, no exits): a base for
    /// `..Default::default()` in tests and synthetic networks.
    fn default() -> Self {
        RelayRecord {
            nickname: String::new(),
            rsa_id: RsaIdentity([0; 20]),
            ed_id: None,
            ntor_onion_key: None,
            ipv4: None,
            ipv6: None,
            flags: RelayFlags::empty(),
            bandwidth: 0,
            family: Vec::new(),
            family_ids: Vec::new(),
            policy: RelayPolicy::default(),
        }
    }
}

impl BandwidthWeights {
    /// The weighted bandwidth of a relay with `flags` and `bandwidth` in `role`, following
    /// path-spec §2.2 and dir-spec §3.8.3: the weight class is Guard+Exit (`d`), Guard (`g`),
    /// Exit (`e`) or neither (`m`), where a `BadExit` relay counts as no exit; for middle and
    /// exit positions a directory cache (`V2Dir`) is further scaled by the `W?b` weight.
    /// Guards never take a weight for the exit class (an Exit-only relay has weight 0 as a
    /// guard).
    pub fn relay_weight(&self, role: WeightRole, flags: RelayFlags, bandwidth: u32) -> u64 {
        let is_exit = flags.contains(RelayFlags::EXIT) && !flags.contains(RelayFlags::BAD_EXIT);
        let is_guard = flags.contains(RelayFlags::GUARD);
        let is_dir = flags.contains(RelayFlags::V2DIR);
        let (wg, wm, we, wd, b) = match role {
            WeightRole::Guard => (self.wgg, self.wgm, 0, self.wgd, None),
            WeightRole::Middle => (self.wmg, self.wmm, self.wme, self.wmd, Some(())),
            WeightRole::Exit => (self.weg, self.wem, self.wee, self.wed, Some(())),
            WeightRole::Dir => (self.wbg, self.wbm, self.wbe, self.wbd, None),
        };
        let (w, wb) = match (is_guard, is_exit) {
            (true, true) => (wd, self.wdb),
            (true, false) => (wg, self.wgb),
            (false, true) => (we, self.web),
            (false, false) => (wm, self.wmb),
        };
        let wb = if is_dir && b.is_some() {
            wb
        } else {
            self.scale
        };
        let scale = u128::from(self.scale.max(1));
        let v = u128::from(bandwidth) * u128::from(w) * u128::from(wb) / scale;
        u64::try_from(v.min(u128::from(MAX_RELAY_WEIGHT))).unwrap_or(MAX_RELAY_WEIGHT)
    }
}

/// The position a relay is weighted for (path-spec §2.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum WeightRole {
    /// First hop (`Wg?`).
    Guard,
    /// Middle hops, and the last hop of internal circuits (`Wm?`).
    Middle,
    /// Last hop of exit circuits (`We?`).
    Exit,
    /// One-hop directory fetches (`Wb?`).
    Dir,
}

impl WeightRole {
    /// All roles, in table order.
    pub const ALL: [WeightRole; 4] = [
        WeightRole::Guard,
        WeightRole::Middle,
        WeightRole::Exit,
        WeightRole::Dir,
    ];

    fn index(self) -> usize {
        match self {
            WeightRole::Guard => 0,
            WeightRole::Middle => 1,
            WeightRole::Exit => 2,
            WeightRole::Dir => 3,
        }
    }

    /// Flags a relay needs to be considered for this role at all. Every role needs `Running`
    /// and `Valid` (path-spec §2.2); guards need `Guard` (path-spec §5), directory hops need
    /// `V2Dir`.
    pub fn required_flags(self) -> RelayFlags {
        let base = RelayFlags::RUNNING | RelayFlags::VALID;
        match self {
            WeightRole::Guard => base | RelayFlags::GUARD,
            WeightRole::Middle | WeightRole::Exit => base,
            WeightRole::Dir => base | RelayFlags::V2DIR,
        }
    }

    /// Flags that exclude a relay from this role: `BadExit` for exits (path-spec §2.2.1) and
    /// `MiddleOnly` for every position but the middle.
    pub fn forbidden_flags(self) -> RelayFlags {
        match self {
            WeightRole::Middle => RelayFlags::empty(),
            WeightRole::Exit => RelayFlags::BAD_EXIT | RelayFlags::MIDDLE_ONLY,
            WeightRole::Guard | WeightRole::Dir => RelayFlags::MIDDLE_ONLY,
        }
    }
}

/// The index of a relay in a [`NetView`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RelayIdx(pub u32);

impl RelayIdx {
    /// As a `usize`, for indexing.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Why a network view could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetViewError {
    /// More than [`MAX_RELAYS`] relays.
    #[error("too many relays: {0} (at most {MAX_RELAYS})")]
    TooManyRelays(usize),
    /// Two records share an RSA identity.
    #[error("relay {0} is listed twice")]
    DuplicateRelay(RsaIdentity),
    /// A family line is longer than [`MAX_FAMILY_ENTRIES`].
    #[error("relay {0}: family has more than {MAX_FAMILY_ENTRIES} entries")]
    FamilyTooLong(RsaIdentity),
    /// A relay has more than [`MAX_FAMILY_ENTRIES`] family IDs (proposal 321 `family-ids`).
    #[error("relay {0}: more than {MAX_FAMILY_ENTRIES} family IDs")]
    FamilyIdsTooLong(RsaIdentity),
    /// An exit policy is longer than [`MAX_POLICY_RULES`].
    #[error("relay {0}: exit policy has more than {MAX_POLICY_RULES} rules")]
    PolicyTooLong(RsaIdentity),
}

/// The per-relay data that path selection reads in its inner loop, kept small and contiguous.
#[derive(Clone, Copy, Debug)]
struct Hot {
    flags: RelayFlags,
    /// IPv4 /16 prefix plus one (0: no IPv4 address).
    net16: u32,
    /// IPv6 /32 prefix, when there is an IPv6 address.
    net32: Option<u32>,
    /// Range of this relay's mutual family in `NetView::family`.
    fam_start: u32,
    fam_len: u16,
    /// Number of this relay's family-ID groups (its range in `NetView::groups` starts at
    /// `NetView::grp_start[i]`, read only when this is not 0: `Hot` stays at 24 bytes).
    grp_len: u16,
    /// `fam_len != 0 || grp_len != 0`: the one test most pairs need (most relays have no
    /// family of either kind).
    has_family: bool,
    /// Whether the exit policy allows some port.
    exits: bool,
}

/// The relays eligible for one role and the running sum of their weights.
#[derive(Clone, Debug, Default)]
struct RoleTable {
    /// `cum[i]` = sum of the weights of `members[0..=i]`.
    cum: Vec<u64>,
    members: Vec<u32>,
}

impl RoleTable {
    fn total(&self) -> u64 {
        self.cum.last().copied().unwrap_or(0)
    }

    fn weight_at(&self, i: usize) -> u64 {
        let hi = self.cum.get(i).copied().unwrap_or(0);
        let lo = i
            .checked_sub(1)
            .and_then(|j| self.cum.get(j))
            .copied()
            .unwrap_or(0);
        hi - lo
    }

    /// One member, drawn with probability proportional to its weight (uniformly when every
    /// weight is zero, as C tor does).
    fn sample(&self, rng: &mut impl CryptoRngCore) -> Option<u32> {
        let total = self.total();
        if total == 0 {
            let n = u64::try_from(self.members.len()).ok()?;
            if n == 0 {
                return None;
            }
            let i = usize::try_from(uniform_below(rng, n)).ok()?;
            return self.members.get(i).copied();
        }
        let r = uniform_below(rng, total);
        let pos = self.cum.partition_point(|&c| c <= r);
        self.members.get(pos).copied()
    }
}

/// A uniform integer in `0..n` (`n > 0`), by rejection of the biased zone of `next_u64`.
///
/// The loop is bounded: after 64 rejections (probability below 2^-64) the residual bias of a
/// plain modulo is accepted.
pub fn uniform_below(rng: &mut impl CryptoRngCore, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let zone = (u64::MAX / n) * n;
    let mut x = rng.next_u64();
    for _ in 0..64 {
        if x < zone {
            break;
        }
        x = rng.next_u64();
    }
    x % n
}

/// The network as path selection sees it. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct NetView {
    relays: Vec<RelayRecord>,
    hot: Vec<Hot>,
    family: Vec<u32>,
    /// Every relay's family-ID groups (proposal 321), sorted per relay; ranges in `Hot`.
    groups: Vec<u32>,
    /// Per relay, where its range in `groups` starts.
    grp_start: Vec<u32>,
    /// The members of group `g` are `group_members[group_start[g]..group_start[g + 1]]`,
    /// sorted (the inverse of `groups`, for [`NetView::family_of`]).
    group_start: Vec<u32>,
    group_members: Vec<u32>,
    by_rsa: HashMap<RsaIdentity, u32>,
    weights: BandwidthWeights,
    tables: [RoleTable; 4],
}

impl NetView {
    /// Build a view from relay records and the consensus weights.
    ///
    /// Families are resolved here: relay B counts as A's family if A lists B and B lists A,
    /// and both are in the view (dir-spec §2.1.1), or if A and B have a family ID in common
    /// (proposal 321, as C tor 0.4.9 clients do). Family IDs held by one relay only can
    /// never match and are dropped; the others are interned to group indices.
    pub fn from_records(
        records: Vec<RelayRecord>,
        weights: BandwidthWeights,
    ) -> Result<Self, NetViewError> {
        if records.len() > MAX_RELAYS {
            return Err(NetViewError::TooManyRelays(records.len()));
        }
        let mut by_rsa = HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if r.family.len() > MAX_FAMILY_ENTRIES {
                return Err(NetViewError::FamilyTooLong(r.rsa_id));
            }
            if r.family_ids.len() > MAX_FAMILY_ENTRIES {
                return Err(NetViewError::FamilyIdsTooLong(r.rsa_id));
            }
            if let RelayPolicy::Full { rules, .. } = &r.policy {
                if rules.rules.len() > MAX_POLICY_RULES {
                    return Err(NetViewError::PolicyTooLong(r.rsa_id));
                }
            }
            // `i < MAX_RELAYS` fits in u32.
            if by_rsa.insert(r.rsa_id, i as u32).is_some() {
                return Err(NetViewError::DuplicateRelay(r.rsa_id));
            }
        }
        // Each declared family sorted, for the "does B list A" check.
        let mut records = records;
        for r in &mut records {
            r.family.sort_unstable();
            r.family.dedup();
            if r.family_ids.len() > 1 {
                r.family_ids.sort_unstable();
                r.family_ids.dedup();
            }
        }
        let FamilyGroups {
            groups,
            starts: grp_start,
            lens: grp_lens,
            group_start,
            group_members,
        } = FamilyGroups::new(&records);
        let mut family = Vec::new();
        let mut hot = Vec::with_capacity(records.len());
        for ((i, r), grp_len) in records.iter().enumerate().zip(grp_lens) {
            let start = family.len();
            let mut mine: Vec<u32> = r
                .family
                .iter()
                .filter_map(|id| by_rsa.get(id).copied())
                .filter(|&j| j as usize != i)
                .filter(|&j| {
                    records
                        .get(j as usize)
                        .is_some_and(|g| g.family.binary_search(&r.rsa_id).is_ok())
                })
                .collect();
            mine.sort_unstable();
            mine.dedup();
            family.extend_from_slice(&mine);
            let net16 = r.ipv4.map_or(0, |a| (u32::from(*a.ip()) >> 16) + 1);
            let net32 = r.ipv6.map(|a| (u128::from(*a.ip()) >> 96) as u32);
            hot.push(Hot {
                flags: r.flags,
                net16,
                net32,
                // Bounded: at most MAX_RELAYS * MAX_FAMILY_ENTRIES = 2^30 entries, and at
                // most MAX_FAMILY_ENTRIES (checked above to fit u16) per relay.
                fam_start: start as u32,
                fam_len: mine.len() as u16,
                grp_len,
                has_family: !mine.is_empty() || grp_len != 0,
                exits: r.policy.allows_some_port(),
            });
        }
        let mut tables: [RoleTable; 4] = Default::default();
        for role in WeightRole::ALL {
            let t = &mut tables[role.index()];
            let mut sum: u64 = 0;
            for (i, (r, h)) in records.iter().zip(&hot).enumerate() {
                if !role_eligible(role, h) {
                    continue;
                }
                sum = sum.saturating_add(weights.relay_weight(role, r.flags, r.bandwidth));
                t.cum.push(sum);
                t.members.push(i as u32);
            }
        }
        Ok(Self {
            relays: records,
            hot,
            family,
            groups,
            grp_start,
            group_start,
            group_members,
            by_rsa,
            weights,
            tables,
        })
    }

    /// Every relay in the view.
    pub fn relays(&self) -> &[RelayRecord] {
        &self.relays
    }

    /// Number of relays.
    pub fn len(&self) -> usize {
        self.relays.len()
    }

    /// Whether the view has no relay.
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// The relay at `idx`.
    pub fn relay(&self, idx: RelayIdx) -> Option<&RelayRecord> {
        self.relays.get(idx.get())
    }

    /// The relay with this RSA identity.
    pub fn by_rsa_id(&self, id: &RsaIdentity) -> Option<RelayIdx> {
        self.by_rsa.get(id).map(|&i| RelayIdx(i))
    }

    /// The relay with this nickname (the first one, if several share it).
    pub fn by_nickname(&self, nick: &str) -> Option<RelayIdx> {
        self.relays
            .iter()
            .position(|r| r.nickname == nick)
            .map(|i| RelayIdx(i as u32))
    }

    /// The consensus weights the view uses.
    pub fn weights(&self) -> &BandwidthWeights {
        &self.weights
    }

    /// Whether `idx` may ever take `role` (flags and, for exits, a policy that allows some
    /// port). Per-circuit requirements (Fast, Stable, the port) come on top.
    pub fn eligible(&self, idx: RelayIdx, role: WeightRole) -> bool {
        self.hot
            .get(idx.get())
            .is_some_and(|h| role_eligible(role, h))
    }

    /// The weight of `idx` in `role` (0 when not eligible).
    pub fn role_weight(&self, idx: RelayIdx, role: WeightRole) -> u64 {
        match self.relays.get(idx.get()) {
            Some(r) if self.eligible(idx, role) => {
                self.weights.relay_weight(role, r.flags, r.bandwidth)
            }
            _ => 0,
        }
    }

    /// The sum of the weights of all relays eligible for `role`.
    pub fn total_weight(&self, role: WeightRole) -> u64 {
        self.tables[role.index()].total()
    }

    /// The relays eligible for `role`, with their weights.
    pub fn role_members(&self, role: WeightRole) -> impl Iterator<Item = (RelayIdx, u64)> + '_ {
        let t = &self.tables[role.index()];
        t.members
            .iter()
            .enumerate()
            .map(move |(i, &m)| (RelayIdx(m), t.weight_at(i)))
    }

    /// The flags of `idx`.
    pub fn flags(&self, idx: RelayIdx) -> RelayFlags {
        self.hot
            .get(idx.get())
            .map_or(RelayFlags::empty(), |h| h.flags)
    }

    /// Every relay in `idx`'s family, sorted and without `idx` itself: the relays it lists
    /// mutually (dir-spec §2.1.1) and those sharing a family ID with it (proposal 321).
    ///
    /// Built on demand (its length is the answer's, up to the whole view when many relays
    /// share an ID); path selection uses [`NetView::same_family`], which allocates nothing.
    pub fn family_of(&self, idx: RelayIdx) -> Vec<RelayIdx> {
        let mut out: Vec<u32> = self.mutual_family_of(idx).to_vec();
        for &g in self.family_groups(idx) {
            let g = g as usize;
            let (s, e) = (
                self.group_start.get(g).copied().unwrap_or(0) as usize,
                self.group_start.get(g + 1).copied().unwrap_or(0) as usize,
            );
            out.extend(self.group_members.get(s..e).unwrap_or(&[]));
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|&j| j != idx.0);
        out.into_iter().map(RelayIdx).collect()
    }

    /// The relays that list `idx` in their `family` line and are listed in its own
    /// (dir-spec §2.1.1), sorted. Family-ID members are not included (see
    /// [`NetView::family_of`]).
    pub fn mutual_family_of(&self, idx: RelayIdx) -> &[u32] {
        self.hot
            .get(idx.get())
            .and_then(|h| {
                let s = h.fam_start as usize;
                self.family.get(s..s + usize::from(h.fam_len))
            })
            .unwrap_or(&[])
    }

    /// The family-ID groups of `idx` (proposal 321), sorted: one small index per `family-ids`
    /// token the relay shares with at least one other relay of the view. Two relays are in
    /// one happy family exactly when these lists intersect.
    pub fn family_groups(&self, idx: RelayIdx) -> &[u32] {
        match (self.hot.get(idx.get()), self.grp_start.get(idx.get())) {
            (Some(h), Some(&s)) if h.grp_len != 0 => {
                let s = s as usize;
                self.groups
                    .get(s..s + usize::from(h.grp_len))
                    .unwrap_or(&[])
            }
            _ => &[],
        }
    }

    /// Whether `a` and `b` are two relays of one family, which must not share a circuit
    /// (path-spec §2.2): each lists the other on its `family` line (dir-spec §2.1.1), or
    /// they have a `family-ids` token in common (proposal 321 "happy families", the rule of
    /// C tor 0.4.9 clients). A relay is not its own family member.
    pub fn same_family(&self, a: RelayIdx, b: RelayIdx) -> bool {
        if a == b {
            return false;
        }
        match (self.hot.get(a.get()), self.hot.get(b.get())) {
            (Some(x), Some(y)) => self.family_conflict(a, b, x, y),
            _ => false,
        }
    }

    /// Whether `a` and `b` share an IPv4 /16 or an IPv6 /32 (path-spec §2.2).
    pub fn same_subnet(&self, a: RelayIdx, b: RelayIdx) -> bool {
        match (self.hot.get(a.get()), self.hot.get(b.get())) {
            (Some(x), Some(y)) => same_subnet(x, y),
            _ => false,
        }
    }

    /// Whether `a` and `b` may not share a circuit (path-spec §2.2): the same relay, one
    /// family ([`NetView::same_family`]) or, when `subnets` is set, one subnet
    /// ([`NetView::same_subnet`]). The inner test of path selection: both records are
    /// read once, and the family lists only when the relay has some.
    #[inline]
    pub(crate) fn conflict(&self, a: RelayIdx, b: RelayIdx, subnets: bool) -> bool {
        if a == b {
            return true;
        }
        let (Some(x), Some(y)) = (self.hot.get(a.get()), self.hot.get(b.get())) else {
            return false;
        };
        (subnets && same_subnet(x, y)) || (x.has_family && self.family_conflict(a, b, x, y))
    }

    /// The family test of [`NetView::same_family`] and [`NetView::conflict`] (`x` and `y`
    /// are the hot records of `a` and `b`). Kept out of line: path selection calls it only
    /// for a relay with some family, and most relays have none.
    #[inline(never)]
    fn family_conflict(&self, a: RelayIdx, b: RelayIdx, x: &Hot, y: &Hot) -> bool {
        let fs = x.fam_start as usize;
        let mutual = self
            .family
            .get(fs..fs + usize::from(x.fam_len))
            .unwrap_or(&[]);
        mutual.binary_search(&b.0).is_ok()
            || (x.grp_len != 0
                && y.grp_len != 0
                && sorted_intersect(self.family_groups(a), self.family_groups(b)))
    }

    /// One relay drawn from `role`'s table by weight, before any per-circuit filter.
    pub(crate) fn sample_role(
        &self,
        role: WeightRole,
        rng: &mut impl CryptoRngCore,
    ) -> Option<u32> {
        self.tables[role.index()].sample(rng)
    }

    /// The members of `role`'s table with their weights, for the exact (linear) fallback.
    pub(crate) fn table(&self, role: WeightRole) -> (&[u64], &[u32]) {
        let t = &self.tables[role.index()];
        (&t.cum, &t.members)
    }
}

/// The fingerprint members of a `family` line (dir-spec §2.1.1: `$HEX`, `$HEX=nick`,
/// `$HEX~nick`; bare nicknames are ignored, as C tor does for path selection), at most
/// one more than [`MAX_FAMILY_ENTRIES`] so that an overlong list is refused. Decoded here
/// with the identity type's own allocation-free hex parser: this runs for every
/// member of every family on each new consensus.
fn family_ids(line: &str) -> Vec<RsaIdentity> {
    line.split_ascii_whitespace()
        .filter_map(|m| {
            let m = m.strip_prefix('$')?;
            if m.len() > 40 && !matches!(m.as_bytes().get(40), Some(b'=') | Some(b'~')) {
                return None;
            }
            RsaIdentity::from_hex(m.get(..40)?).ok()
        })
        .take(MAX_FAMILY_ENTRIES + 1)
        .collect()
}

/// Whether two sorted slices have an element in common (a merge: linear in their lengths,
/// each at most [`MAX_FAMILY_ENTRIES`]).
fn sorted_intersect(a: &[u32], b: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        match x.cmp(&y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// The family-ID groups of a set of records (proposal 321), in compact form.
struct FamilyGroups {
    /// Every relay's sorted group indices, concatenated.
    groups: Vec<u32>,
    /// Per relay, where its range in `groups` starts and how long it is.
    starts: Vec<u32>,
    lens: Vec<u16>,
    /// Group `g`'s members are `group_members[group_start[g]..group_start[g + 1]]`.
    group_start: Vec<u32>,
    group_members: Vec<u32>,
}

impl FamilyGroups {
    /// Intern the family IDs of `records` (each relay's list sorted, deduplicated and at most
    /// [`MAX_FAMILY_ENTRIES`] long). An ID held by a single relay matches nobody and gets no
    /// group, so a relay alone in its family costs nothing in path selection. Every vector
    /// built here is at most as long as the total number of IDs in the input: memory stays
    /// linear however many relays share an ID.
    fn new(records: &[RelayRecord]) -> Self {
        // How many relays hold each ID (lists are deduplicated, so once per relay).
        let mut count: HashMap<&str, u32> = HashMap::new();
        for r in records {
            for id in &r.family_ids {
                *count.entry(id.as_str()).or_insert(0) += 1;
            }
        }
        count.retain(|_, c| *c >= 2);
        if count.is_empty() {
            // No ID is shared (today's common case): no groups at all.
            return Self {
                groups: Vec::new(),
                starts: vec![0; records.len()],
                lens: vec![0; records.len()],
                group_start: vec![0],
                group_members: Vec::new(),
            };
        }
        // Group indices in order of first appearance; `sizes[g]` is group g's member count.
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(count.len());
        let mut sizes: Vec<u32> = Vec::with_capacity(count.len());
        let mut groups = Vec::new();
        let mut starts = Vec::with_capacity(records.len());
        let mut lens = Vec::with_capacity(records.len());
        for r in records {
            let start = groups.len();
            // At most MAX_RELAYS * MAX_FAMILY_ENTRIES = 2^30 in all: fits u32.
            starts.push(start as u32);
            for id in &r.family_ids {
                let Some(&c) = count.get(id.as_str()) else {
                    continue;
                };
                let g = *index.entry(id.as_str()).or_insert_with(|| {
                    sizes.push(c);
                    // At most MAX_RELAYS * MAX_FAMILY_ENTRIES groups: fits u32.
                    (sizes.len() - 1) as u32
                });
                groups.push(g);
            }
            if let Some(mine) = groups.get_mut(start..) {
                mine.sort_unstable();
            }
            // At most MAX_FAMILY_ENTRIES per relay: fits u16.
            lens.push((groups.len() - start) as u16);
        }
        // The inverse (group -> members) by counting sort; members come out ascending.
        let mut group_start = Vec::with_capacity(sizes.len() + 1);
        let mut total = 0u32;
        group_start.push(0);
        for &n in &sizes {
            total += n;
            group_start.push(total);
        }
        let mut fill: Vec<u32> = group_start.clone();
        let mut group_members = vec![0u32; total as usize];
        for (i, (&s, &n)) in starts.iter().zip(&lens).enumerate() {
            for &g in groups
                .get(s as usize..s as usize + usize::from(n))
                .unwrap_or(&[])
            {
                if let Some(slot) = fill.get_mut(g as usize) {
                    if let Some(m) = group_members.get_mut(*slot as usize) {
                        *m = i as u32;
                    }
                    *slot += 1;
                }
            }
        }
        Self {
            groups,
            starts,
            lens,
            group_start,
            group_members,
        }
    }
}

/// The record of a consensus entry, with no descriptor data yet.
fn base_record(rs: &RouterStatus<'_>) -> RelayRecord {
    RelayRecord {
        nickname: rs.nickname.to_string(),
        rsa_id: rs.identity,
        ed_id: None,
        ntor_onion_key: None,
        ipv4: Some(SocketAddrV4::new(rs.address, rs.or_port)),
        ipv6: rs.ipv6,
        flags: rs.flags,
        bandwidth: rs.weight(),
        family: Vec::new(),
        family_ids: Vec::new(),
        policy: RelayPolicy::default(),
    }
}

/// The record of a consensus entry completed by its descriptor (micro or full): keys,
/// family and family IDs, exit policy, and the descriptor's IPv6 address when the consensus
/// has none.
fn described_record(
    rs: &RouterStatus<'_>,
    ed_id: Option<Ed25519Identity>,
    ntor_onion_key: [u8; 32],
    ipv6: Option<SocketAddrV6>,
    family: &str,
    fam_ids: Vec<String>,
    policy: RelayPolicy,
) -> RelayRecord {
    let mut r = base_record(rs);
    r.ed_id = ed_id.map(|e| e.0);
    r.ntor_onion_key = Some(ntor_onion_key);
    if r.ipv6.is_none() {
        r.ipv6 = ipv6;
    }
    r.family = family_ids(family);
    r.family_ids = fam_ids;
    r.policy = policy;
    r
}

impl NetView {
    /// The view of a microdescriptor-flavour consensus and the microdescriptors we hold: a
    /// relay is included only when its `m` line's microdescriptor is in `mds` (dir-spec
    /// §3.3; guard-spec §4.12: no circuit goes through a relay without its descriptor). The
    /// microdescriptor gives the keys, the `family` line, the `family-ids` line (proposal
    /// 321, C tor 0.4.9) and the `p`/`p6` summaries.
    ///
    /// The consensus should have been verified; this does not check signatures.
    pub fn from_microdescs(
        cons: &Consensus<'_>,
        mds: &[Microdesc<'_>],
    ) -> Result<Self, NetViewError> {
        let by_digest: HashMap<MdDigest, &Microdesc<'_>> =
            mds.iter().map(|m| (m.digest, m)).collect();
        let records = cons
            .relays
            .iter()
            .filter_map(|rs| {
                let md = by_digest.get(&rs.md_digest?)?;
                Some(described_record(
                    rs,
                    md.ed25519_id,
                    md.ntor_onion_key,
                    md.ipv6,
                    md.family.0,
                    // One more than the bound, so that an overlong list is refused.
                    md.family_ids
                        .ids()
                        .take(MAX_FAMILY_ENTRIES + 1)
                        .map(str::to_owned)
                        .collect(),
                    RelayPolicy::Summary {
                        v4: PortSet::from_policy_summary(&md.ipv4_policy),
                        v6: PortSet::from_policy_summary(&md.ipv6_policy),
                    },
                ))
            })
            .collect();
        Self::from_records(records, cons.weights())
    }

    /// The full-descriptor view: an `ns`-flavour consensus and the server descriptors we hold
    /// (dir-spec §2.1). A relay is included when a descriptor with the digest of its `r` line
    /// is present, or, failing that, the newest descriptor with its identity. The descriptor
    /// gives the keys, family and the full exit policy, which private networks need (their
    /// exits allow only `127.0.0.0/8`, which no port summary expresses).
    ///
    /// Families follow the `family` lines only (the mutual rule of dir-spec §2.1.1): a
    /// relay's happy-family IDs (proposal 321) appear in server descriptors as `family-cert`
    /// objects, which are not read here, so two relays that share a family key but do not
    /// list each other are *not* treated as one family in this mode.
    ///
    /// The descriptors should have been verified; this does not check signatures.
    pub fn from_router_descs(
        cons: &Consensus<'_>,
        descs: &[RouterDesc<'_>],
    ) -> Result<Self, NetViewError> {
        let by_digest: HashMap<[u8; 20], &RouterDesc<'_>> =
            descs.iter().map(|d| (d.digest, d)).collect();
        let mut newest: HashMap<RsaIdentity, &RouterDesc<'_>> = HashMap::new();
        for d in descs {
            let e = newest.entry(d.fingerprint).or_insert(d);
            if d.published > e.published {
                *e = d;
            }
        }
        let records = cons
            .relays
            .iter()
            .filter_map(|rs| {
                let d = rs
                    .descriptor_digest
                    .and_then(|dg| by_digest.get(&dg).copied())
                    .filter(|d| d.fingerprint == rs.identity)
                    .or_else(|| newest.get(&rs.identity).copied())?;
                Some(described_record(
                    rs,
                    d.master_key,
                    d.ntor_onion_key,
                    d.ipv6,
                    d.family.0,
                    // Server descriptors carry family IDs as `family-cert` objects, which
                    // this crate does not read: the old mutual rule only (see above).
                    Vec::new(),
                    RelayPolicy::Full {
                        rules: d.exit_policy.clone(),
                        ipv6_policy: PortSet::from_policy_summary(&d.ipv6_policy),
                    },
                ))
            })
            .collect();
        Self::from_records(records, cons.weights())
    }

    /// A view of every relay of a consensus alone, without descriptors: no keys, no family,
    /// and the exit policy taken from the `ns` flavour's `p` summaries (a microdesc-flavour
    /// consensus has none, so its relays exit nowhere).
    ///
    /// For simulations, research and benchmarks on the whole network; a client needs the
    /// descriptors ([`NetView::from_microdescs`]) to build circuits.
    pub fn from_consensus_only(cons: &Consensus<'_>) -> Result<Self, NetViewError> {
        let records = cons
            .relays
            .iter()
            .map(|rs| {
                let mut r = base_record(rs);
                if let Some(p) = &rs.policy {
                    r.policy = RelayPolicy::Summary {
                        v4: PortSet::from_policy_summary(p),
                        v6: PortSet::none(),
                    };
                }
                r
            })
            .collect();
        Self::from_records(records, cons.weights())
    }
}

/// Whether two relays share an IPv4 /16 or an IPv6 /32 (path-spec §2.2).
fn same_subnet(x: &Hot, y: &Hot) -> bool {
    (x.net16 != 0 && x.net16 == y.net16) || (x.net32.is_some() && x.net32 == y.net32)
}

fn role_eligible(role: WeightRole, h: &Hot) -> bool {
    h.flags.contains(role.required_flags())
        && h.flags.0 & role.forbidden_flags().0 == 0
        && (role != WeightRole::Exit || h.exits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_line_members() {
        let a = "A07048407BC479AA3FDD636ABF78594D2378FAF6";
        let b = "3e95d3b4c2a798d03c13808585dbd79a253b69fe";
        let line = format!("${a} nick ${b}=x $123 ${a}~y ${a}z ${b}");
        let ids = family_ids(&line);
        let ra = RsaIdentity::from_hex(a).unwrap();
        let rb = RsaIdentity::from_hex(b).unwrap();
        assert_eq!(ids, vec![ra, rb, ra, rb]);
        let long: String = (0..2000).map(|_| format!("${a} ")).collect();
        assert_eq!(family_ids(&long).len(), MAX_FAMILY_ENTRIES + 1);
    }

    /// A relay for the family tests: `n` names it, `family` lists fingerprints `[j; 20]`.
    fn fam_relay(n: u8, family: &[u8], ids: &[&str]) -> RelayRecord {
        RelayRecord {
            nickname: format!("r{n}"),
            rsa_id: RsaIdentity([n; 20]),
            family: family.iter().map(|&j| RsaIdentity([j; 20])).collect(),
            family_ids: ids.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    const K1: &str = "ed25519:J2h5UtwvJzP7RLKwbjPOwzzYSnvURcqJDDAn8kSTtyA";
    const K2: &str = "ed25519:7oHrWGLdPMWtBAFrh/ZONNc0YPK5gSO4Ebj7vCsiC6Q";

    #[test]
    fn shared_family_id_makes_a_family() {
        let recs = vec![
            // 0 and 1 share K1 and list nobody.
            fam_relay(0, &[], &[K1]),
            fam_relay(1, &[], &[K2, K1, K1]),
            // 2 has an ID nobody else holds; 3 has one differing only in case, 4 a prefix.
            fam_relay(2, &[], &["ed25519:unique"]),
            fam_relay(3, &[], &[&K1.to_lowercase()]),
            fam_relay(4, &[], &[&K1[..K1.len() - 1]]),
            // 5 lists 0, but 0 does not list 5, and they share no ID.
            fam_relay(5, &[0], &[K2]),
        ];
        let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
        let r = |i| RelayIdx(i);
        assert!(view.same_family(r(0), r(1)));
        assert!(view.same_family(r(1), r(0)));
        assert_eq!(view.family_of(r(0)), vec![r(1)]);
        assert_eq!(view.mutual_family_of(r(0)), &[] as &[u32]);
        // Exact string comparison only.
        for other in [2, 3, 4] {
            assert!(!view.same_family(r(0), r(other)), "0 and {other}");
            assert!(view.family_of(r(other)).is_empty());
        }
        // One-sided MyFamily is still not a family, but 5 shares K2 with 1.
        assert!(!view.same_family(r(0), r(5)));
        assert!(!view.same_family(r(5), r(0)));
        assert!(view.same_family(r(1), r(5)));
        assert_eq!(view.family_of(r(1)), vec![r(0), r(5)]);
        // Families are pairwise, not transitive: 0 and 5 both are 1's family, not each other's.
        assert!(!view.family_of(r(5)).contains(&r(0)));
        // IDs nobody shares get no group; the records keep them, sorted and deduplicated.
        assert!(view.family_groups(r(2)).is_empty());
        assert_eq!(view.family_groups(r(1)).len(), 2);
        assert_eq!(view.relay(r(1)).unwrap().family_ids, vec![K2, K1]);
        // A relay is not its own family.
        assert!(!view.same_family(r(0), r(0)));
        assert!(!view.same_family(r(0), r(99)));
    }

    #[test]
    fn either_rule_makes_a_family() {
        let recs = vec![
            fam_relay(0, &[1], &[K1]),
            fam_relay(1, &[0], &[]),
            fam_relay(2, &[], &[K1]),
            fam_relay(3, &[], &[K2]),
            fam_relay(4, &[3], &[]),
        ];
        let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
        let r = |i| RelayIdx(i);
        // 0-1 mutual, 0-2 by K1.
        assert!(view.same_family(r(0), r(1)));
        assert!(view.same_family(r(0), r(2)));
        assert_eq!(view.family_of(r(0)), vec![r(1), r(2)]);
        assert!(!view.same_family(r(1), r(2)));
        // No shared ID and no mutual listing: 3 has a lone ID, 4 lists 3 one-sidedly.
        assert!(!view.same_family(r(3), r(4)));
        assert!(view.family_of(r(3)).is_empty());
        for (a, b) in [(0, 3), (1, 3), (2, 4)] {
            assert!(!view.same_family(r(a), r(b)), "{a} and {b}");
        }
    }

    #[test]
    fn hot_record_stays_small() {
        // Path selection reads one `Hot` per candidate and per chosen hop.
        assert_eq!(std::mem::size_of::<Hot>(), 24);
    }

    #[test]
    fn one_id_shared_by_many_relays_stays_linear() {
        // An adversarial consensus: every relay holds the same ID plus one of its own.
        const N: u32 = 10_000;
        let recs: Vec<RelayRecord> = (0..N)
            .map(|i| RelayRecord {
                rsa_id: RsaIdentity({
                    let mut id = [0; 20];
                    id[..4].copy_from_slice(&i.to_be_bytes());
                    id
                }),
                family_ids: vec![K1.to_string(), format!("ed25519:own{i}")],
                ..Default::default()
            })
            .collect();
        let view = NetView::from_records(recs, BandwidthWeights::default()).unwrap();
        // One group entry per relay and one member entry per relay: N each, not N^2. The
        // unshared IDs get no group at all.
        assert_eq!(view.groups.len(), N as usize);
        assert_eq!(view.group_members.len(), N as usize);
        assert_eq!(view.group_start, vec![0, N]);
        assert!(view.family.is_empty());
        assert!(view.same_family(RelayIdx(0), RelayIdx(N - 1)));
        assert!(view.same_family(RelayIdx(N / 2), RelayIdx(7)));
        let fam = view.family_of(RelayIdx(3));
        assert_eq!(fam.len(), N as usize - 1);
        assert!(!fam.contains(&RelayIdx(3)));
    }

    #[test]
    fn family_ids_are_bounded() {
        let ids = |n: usize| (0..n).map(|i| format!("ed25519:k{i}")).collect::<Vec<_>>();
        let mut r = fam_relay(1, &[], &[]);
        r.family_ids = ids(MAX_FAMILY_ENTRIES);
        assert!(NetView::from_records(vec![r.clone()], BandwidthWeights::default()).is_ok());
        r.family_ids = ids(MAX_FAMILY_ENTRIES + 1);
        assert_eq!(
            NetView::from_records(vec![r], BandwidthWeights::default()).unwrap_err(),
            NetViewError::FamilyIdsTooLong(RsaIdentity([1; 20]))
        );
        // Two relays sharing all of the maximum: one group per ID, both see each other.
        let mut a = fam_relay(1, &[], &[]);
        let mut b = fam_relay(2, &[], &[]);
        a.family_ids = ids(MAX_FAMILY_ENTRIES);
        b.family_ids = ids(MAX_FAMILY_ENTRIES);
        b.family_ids.reverse();
        let view = NetView::from_records(vec![a, b], BandwidthWeights::default()).unwrap();
        assert_eq!(view.family_groups(RelayIdx(1)).len(), MAX_FAMILY_ENTRIES);
        assert!(view.same_family(RelayIdx(0), RelayIdx(1)));
    }

    #[test]
    fn weights_by_class() {
        let w = BandwidthWeights::parse_line(
            "Wbd=0 Wbe=0 Wbg=389 Wbm=10000 Wdb=10000 Web=10000 Wed=10000 Wee=10000 Weg=10000 \
             Wem=10000 Wgb=10000 Wgd=0 Wgg=9611 Wgm=9611 Wmb=10000 Wmd=0 Wme=0 Wmg=389 Wmm=10000",
            None,
        );
        let g = RelayFlags::GUARD | RelayFlags::RUNNING | RelayFlags::VALID;
        let e = RelayFlags::EXIT | RelayFlags::RUNNING | RelayFlags::VALID;
        let d = g | e;
        assert_eq!(w.relay_weight(WeightRole::Guard, g, 100), 961_100);
        assert_eq!(w.relay_weight(WeightRole::Middle, g, 100), 38_900);
        assert_eq!(w.relay_weight(WeightRole::Guard, e, 100), 0);
        assert_eq!(w.relay_weight(WeightRole::Guard, d, 100), 0);
        assert_eq!(w.relay_weight(WeightRole::Exit, d, 100), 1_000_000);
        assert_eq!(w.relay_weight(WeightRole::Middle, e, 100), 0);
        // BadExit makes an Exit-flagged relay weigh as a plain middle.
        let bad = e | RelayFlags::BAD_EXIT;
        assert_eq!(w.relay_weight(WeightRole::Middle, bad, 100), 1_000_000);
    }
}
