//! Exit policies: full policies of server descriptors (dir-spec §2.1.1
//! `accept`/`reject`/`accept6`/`reject6`, §2.1.3 nonterminals) and the port-only
//! summaries of consensus `p` lines and microdescriptor `p`/`p6` lines
//! (dir-spec §3.4.1, §3.8.2), with "does this relay allow exiting to
//! address:port".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{ParseError, ParseProblem};
use crate::netdoc::Item;

/// Most port ranges accepted in one summary or rule list (a summary can name at
/// most 65,535 distinct ports; real ones have a few dozen).
const MAX_RANGES: usize = 65_536;

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port (inclusive).
    pub lo: u16,
    /// Last port (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// Every port, `1-65535`.
    pub const ALL: PortRange = PortRange { lo: 1, hi: 65535 };

    /// Does the range contain `port`?
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// Parse `N` or `N-M` (1 <= N <= M <= 65535).
    pub fn parse(s: &str) -> Option<Self> {
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (parse_port(a)?, parse_port(b)?),
            None => {
                let p = parse_port(s)?;
                (p, p)
            }
        };
        (lo <= hi && lo >= 1).then_some(PortRange { lo, hi })
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// A port-only policy summary: `accept|reject PortList` (dir-spec §3.8.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicySummary {
    /// `true` for `accept` (the listed ports are allowed), `false` for `reject`.
    pub accept: bool,
    /// The listed ranges, in document order.
    pub ranges: Vec<PortRange>,
}

impl Default for PolicySummary {
    /// `reject 1-65535`: what a missing `p`/`p6` line means (dir-spec §3.3).
    fn default() -> Self {
        Self::reject_all()
    }
}

impl PolicySummary {
    /// `reject 1-65535`.
    pub fn reject_all() -> Self {
        PolicySummary {
            accept: false,
            ranges: vec![PortRange::ALL],
        }
    }

    /// Parse the policy-summary item `it` (`p`/`p6` in consensus entries and
    /// microdescriptors, `ipv6-policy` in router descriptors; dir-spec §3.4.1, §3.3, §2.1.1);
    /// a malformed summary is an error at `it`.
    pub(crate) fn from_item(it: &Item<'_>) -> Result<Self, ParseError> {
        Self::parse(it.args).ok_or_else(|| it.err(ParseProblem::BadArgument("policy summary")))
    }

    /// Parse the arguments of a `p`/`p6` line: `accept|reject PortList`.
    pub fn parse(args: &str) -> Option<Self> {
        let mut it = args.split_ascii_whitespace();
        let accept = match it.next()? {
            "accept" => true,
            "reject" => false,
            _ => return None,
        };
        let list = it.next()?;
        let mut ranges = Vec::with_capacity(list.len() / 4 + 1);
        for r in list.split(',') {
            if ranges.len() >= MAX_RANGES {
                return None;
            }
            ranges.push(PortRange::parse(r)?);
        }
        Some(PolicySummary { accept, ranges })
    }

    /// Does the summary allow exiting to `port` (at some address)?
    pub fn allows_port(&self, port: u16) -> bool {
        PortSet::from_policy_summary(self).contains(port)
    }

    /// Does the summary allow any port at all?
    pub fn allows_some_port(&self) -> bool {
        !PortSet::from_policy_summary(self).is_empty()
    }
}

impl fmt::Display for PolicySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.accept { "accept " } else { "reject " })?;
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The address part of an exit pattern (dir-spec §2.1.3 `addrspec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrPattern {
    /// `*`: every address (IPv4 and IPv6).
    Any,
    /// `*4`: every IPv4 address.
    Any4,
    /// `*6`: every IPv6 address.
    Any6,
    /// An IPv4 network.
    V4(Ipv4Addr, u8),
    /// An IPv6 network.
    V6(Ipv6Addr, u8),
}

impl AddrPattern {
    fn matches(&self, a: IpAddr) -> bool {
        match (self, a) {
            (AddrPattern::Any, _) => true,
            (AddrPattern::Any4, IpAddr::V4(_)) | (AddrPattern::Any6, IpAddr::V6(_)) => true,
            (AddrPattern::V4(net, bits), IpAddr::V4(a)) => {
                // A prefix longer than 32 bits (only constructible by hand) acts as /32.
                let mask = u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(*bits)))
                    .unwrap_or(0);
                u32::from(*net) & mask == u32::from(a) & mask
            }
            (AddrPattern::V6(net, bits), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(*bits)))
                    .unwrap_or(0);
                u128::from(*net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "*" => return Some(AddrPattern::Any),
            "*4" => return Some(AddrPattern::Any4),
            "*6" => return Some(AddrPattern::Any6),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, bits) = match rest.split_once(']')? {
                (a, "") => (a, 128),
                (a, m) => (a, m.strip_prefix('/')?.parse::<u8>().ok()?),
            };
            if bits > 128 {
                return None;
            }
            return Some(AddrPattern::V6(addr.parse().ok()?, bits));
        }
        let (addr, bits) = match s.split_once('/') {
            None => (s.parse::<Ipv4Addr>().ok()?, 32),
            Some((a, m)) => {
                let a = a.parse::<Ipv4Addr>().ok()?;
                let bits = match m.parse::<u8>() {
                    Ok(b) if b <= 32 => b,
                    Ok(_) => return None,
                    Err(_) => {
                        // dotted-quad netmask; must be contiguous
                        let mask = u32::from(m.parse::<Ipv4Addr>().ok()?);
                        let b = mask.leading_ones();
                        if mask.checked_shl(b).unwrap_or(0) != 0 {
                            return None;
                        }
                        b as u8
                    }
                };
                (a, bits)
            }
        };
        Some(AddrPattern::V4(addr, bits))
    }
}

impl fmt::Display for AddrPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrPattern::Any => f.write_str("*"),
            AddrPattern::Any4 => f.write_str("*4"),
            AddrPattern::Any6 => f.write_str("*6"),
            AddrPattern::V4(a, 32) => write!(f, "{a}"),
            AddrPattern::V4(a, b) => write!(f, "{a}/{b}"),
            AddrPattern::V6(a, 128) => write!(f, "[{a}]"),
            AddrPattern::V6(a, b) => write!(f, "[{a}]/{b}"),
        }
    }
}

/// One rule of a full exit policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    /// `accept` (true) or `reject` (false).
    pub accept: bool,
    /// Written as `accept6`/`reject6`: applies only to IPv6 addresses.
    pub v6_only: bool,
    /// The address pattern.
    pub addr: AddrPattern,
    /// The port range (`*` is 1-65535).
    pub ports: PortRange,
}

impl PolicyRule {
    /// Parse a rule from its keyword (`accept`, `reject`, `accept6`, `reject6`)
    /// and its argument `addrspec:portspec`.
    pub fn parse(keyword: &str, pattern: &str) -> Option<Self> {
        let (accept, v6_only) = match keyword {
            "accept" => (true, false),
            "reject" => (false, false),
            "accept6" => (true, true),
            "reject6" => (false, true),
            _ => return None,
        };
        let (addr, port) = pattern.rsplit_once(':')?;
        let addr = AddrPattern::parse(addr)?;
        if v6_only && matches!(addr, AddrPattern::V4(..) | AddrPattern::Any4) {
            return None;
        }
        let ports = if port == "*" {
            PortRange::ALL
        } else {
            PortRange::parse(port)?
        };
        Some(PolicyRule {
            accept,
            v6_only,
            addr,
            ports,
        })
    }

    /// Does the rule match this address and port?
    pub fn matches(&self, addr: IpAddr, port: u16) -> bool {
        (!self.v6_only || addr.is_ipv6()) && self.ports.contains(port) && self.addr.matches(addr)
    }
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kw = match (self.accept, self.v6_only) {
            (true, false) => "accept",
            (false, false) => "reject",
            (true, true) => "accept6",
            (false, true) => "reject6",
        };
        if self.ports == PortRange::ALL {
            write!(f, "{kw} {}:*", self.addr)
        } else {
            write!(f, "{kw} {}:{}", self.addr, self.ports)
        }
    }
}

/// A full exit policy: rules in order, first match wins (dir-spec §2.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExitPolicy {
    /// The rules in document order.
    pub rules: Vec<PolicyRule>,
}

impl ExitPolicy {
    /// Does the policy allow exiting to `addr:port`? The first matching rule
    /// decides; if none matches the connection is allowed (dir-spec §2.1.1:
    /// "if no rule matches, the address will be accepted").
    pub fn allows(&self, addr: IpAddr, port: u16) -> bool {
        if port == 0 {
            return false;
        }
        self.rules
            .iter()
            .find(|r| r.matches(addr, port))
            .map_or(true, |r| r.accept)
    }

    /// Could the policy allow `port` to *some* IPv4 address? Used when the destination
    /// address is not yet known (a hostname): path-spec §2.2.1 says a relay "might support"
    /// a port if a clause that accepts some connections to that port precedes every clause
    /// rejecting all of them. A rule that rejects only part of the address space does not
    /// settle the question; with no matching clause the implicit default accepts
    /// (dir-spec §2.1.3).
    pub fn allows_port(&self, port: u16) -> bool {
        if port == 0 {
            return false;
        }
        for r in &self.rules {
            if !r.ports.contains(port) || !touches_family(&r.addr, r.v6_only, false) {
                continue;
            }
            if r.accept {
                return true;
            }
            if covers_family(&r.addr, r.v6_only, false) {
                return false;
            }
        }
        true
    }
}

impl<'a> IntoIterator for &'a ExitPolicy {
    type Item = &'a PolicyRule;
    type IntoIter = std::slice::Iter<'a, PolicyRule>;
    fn into_iter(self) -> Self::IntoIter {
        self.rules.iter()
    }
}

impl fmt::Display for ExitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A set of ports as sorted, disjoint, non-adjacent inclusive ranges.
///
/// This is the form of a microdescriptor's `p`/`p6` policy summary (dir-spec §3.3 "p"), after
/// turning a `reject` list into the complementary `accept` list.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    /// No port.
    pub fn none() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Every port 1-65535.
    pub fn all() -> Self {
        Self {
            ranges: vec![(1, 65535)],
        }
    }

    /// The set made of the given inclusive ranges (in any order, possibly overlapping; a range
    /// with `lo > hi` is ignored).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u16, u16)>) -> Self {
        let mut v: Vec<(u16, u16)> = ranges.into_iter().filter(|(lo, hi)| lo <= hi).collect();
        v.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => {
                    last.1 = last.1.max(hi);
                }
                _ => out.push((lo, hi)),
            }
        }
        Self { ranges: out }
    }

    /// The ports of a policy summary: `accept` lists the allowed ports, `reject` the refused
    /// ones (dir-spec §3.3 "p": the summary says what the relay does for "most addresses").
    pub fn from_summary(accept: bool, ranges: impl IntoIterator<Item = (u16, u16)>) -> Self {
        let listed = Self::from_ranges(ranges);
        if accept {
            listed
        } else {
            listed.complement()
        }
    }

    /// The ports a parsed consensus or microdescriptor summary allows.
    pub fn from_policy_summary(s: &PolicySummary) -> Self {
        Self::from_summary(s.accept, s.ranges.iter().map(|r| (r.lo, r.hi)))
    }

    /// The ports in 1-65535 that are not in this set.
    #[must_use]
    pub fn complement(&self) -> Self {
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        let mut next: u32 = 1;
        for &(lo, hi) in &self.ranges {
            if u32::from(lo) > next {
                out.push((next as u16, lo - 1));
            }
            next = u32::from(hi) + 1;
        }
        if next <= 65535 {
            out.push((next as u16, 65535));
        }
        Self { ranges: out }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < port);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= port)
    }

    /// Whether the set is empty (the relay exits to no port).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }
}

/// Whether an address pattern covers every address of one family (`v6` or IPv4).
fn covers_family(p: &AddrPattern, v6_only: bool, v6: bool) -> bool {
    match p {
        AddrPattern::Any => !v6_only || v6,
        AddrPattern::Any4 => !v6,
        AddrPattern::Any6 => v6,
        AddrPattern::V4(_, bits) => !v6 && *bits == 0,
        AddrPattern::V6(_, bits) => v6 && *bits == 0,
    }
}

/// Whether an address pattern covers some address of one family.
fn touches_family(p: &AddrPattern, v6_only: bool, v6: bool) -> bool {
    match p {
        AddrPattern::Any => !v6_only || v6,
        AddrPattern::Any4 | AddrPattern::V4(..) => !v6,
        AddrPattern::Any6 | AddrPattern::V6(..) => v6,
    }
}

/// What a relay lets a client exit to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RelayPolicy {
    /// The microdescriptor summaries (dir-spec §3.3 "p" and "p6"): the ports the relay allows
    /// to "most addresses", for IPv4 and IPv6. A missing `p6` is an empty set.
    Summary {
        /// Ports allowed to most IPv4 addresses.
        v4: PortSet,
        /// Ports allowed to most IPv6 addresses.
        v6: PortSet,
    },
    /// A full policy from a server descriptor (dir-spec §2.1.3), first matching rule wins.
    /// Needed on private networks whose exits allow only `127.0.0.0/8`, which a summary
    /// cannot express. `ipv6_policy` is the descriptor's `ipv6-policy` summary, if any.
    Full {
        /// The descriptor's `accept`/`reject` rules, in order.
        rules: ExitPolicy,
        /// Ports allowed to most IPv6 addresses (dir-spec §2.1.1 "ipv6-policy").
        ipv6_policy: PortSet,
    },
}

impl Default for RelayPolicy {
    fn default() -> Self {
        RelayPolicy::Summary {
            v4: PortSet::none(),
            v6: PortSet::none(),
        }
    }
}

/// Where a client wants to exit to (path-spec §2.2.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExitTarget {
    /// A port at an address not yet known (a hostname): the relay must "might support" it.
    Port(u16),
    /// A known address and port.
    Addr(IpAddr, u16),
}

impl RelayPolicy {
    /// Whether the policy allows exiting to some port at all (path-spec §1.1: exits avoid
    /// relays whose policy is "reject *:*").
    pub fn allows_some_port(&self) -> bool {
        match self {
            RelayPolicy::Summary { v4, v6 } => !v4.is_empty() || !v6.is_empty(),
            RelayPolicy::Full { rules, ipv6_policy } => {
                if !ipv6_policy.is_empty() {
                    return true;
                }
                for r in &rules.rules {
                    if r.accept && touches_family(&r.addr, r.v6_only, false) {
                        return true;
                    }
                    if !r.accept
                        && covers_family(&r.addr, r.v6_only, false)
                        && r.ports == PortRange::ALL
                    {
                        return false;
                    }
                }
                // No rule matched everything: the implicit default accepts (dir-spec §2.1.3).
                true
            }
        }
    }

    /// Whether the relay allows (or, for an unknown address, "might support") `target`
    /// (path-spec §2.2.1).
    pub fn allows(&self, target: ExitTarget) -> bool {
        match (self, target) {
            (RelayPolicy::Summary { v4, .. }, ExitTarget::Port(p)) => v4.contains(p),
            (RelayPolicy::Summary { v4, v6 }, ExitTarget::Addr(a, p)) => {
                if a.is_ipv6() {
                    v6.contains(p)
                } else {
                    v4.contains(p)
                }
            }
            (RelayPolicy::Full { rules, .. }, ExitTarget::Port(p)) => rules.allows_port(p),
            (RelayPolicy::Full { rules, ipv6_policy }, ExitTarget::Addr(a, p)) => {
                if a.is_ipv6()
                    && !rules
                        .rules
                        .iter()
                        .any(|r| touches_family(&r.addr, r.v6_only, true))
                {
                    return ipv6_policy.contains(p);
                }
                rules.allows(a, p)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn portset_summary_complement() {
        let s = PortSet::from_summary(false, [(22, 25), (80, 80)]);
        assert!(s.contains(1));
        assert!(s.contains(21));
        assert!(!s.contains(22));
        assert!(!s.contains(25));
        assert!(s.contains(26));
        assert!(!s.contains(80));
        assert!(s.contains(65535));
        assert_eq!(s.ranges(), &[(1, 21), (26, 79), (81, 65535)]);
        assert!(PortSet::from_summary(false, [(1, 65535)]).is_empty());
        assert_eq!(
            PortSet::from_ranges([(5, 9), (1, 4), (9, 12)]).ranges(),
            &[(1, 12)]
        );
    }

    #[test]
    fn full_policy_might_support() {
        let rules = |lines: &[(&str, &str)]| ExitPolicy {
            rules: lines
                .iter()
                .map(|(k, v)| PolicyRule::parse(k, v).unwrap())
                .collect(),
        };
        let p = RelayPolicy::Full {
            rules: rules(&[("accept", "127.0.0.0/8:*"), ("reject", "*:*")]),
            ipv6_policy: PortSet::none(),
        };
        assert!(p.allows_some_port());
        assert!(p.allows(ExitTarget::Port(80)));
        assert!(p.allows(ExitTarget::Addr("127.0.0.1".parse().unwrap(), 80)));
        assert!(!p.allows(ExitTarget::Addr("8.8.8.8".parse().unwrap(), 80)));
        assert!(!p.allows(ExitTarget::Addr("::1".parse().unwrap(), 80)));
        let reject_all = RelayPolicy::Full {
            rules: rules(&[("reject", "*:*")]),
            ipv6_policy: PortSet::none(),
        };
        assert!(!reject_all.allows_some_port());
        assert!(!reject_all.allows(ExitTarget::Port(443)));
        let partial = RelayPolicy::Full {
            rules: rules(&[
                ("reject", "10.0.0.0/8:*"),
                ("accept", "*:443"),
                ("reject", "*:*"),
            ]),
            ipv6_policy: PortSet::none(),
        };
        assert!(partial.allows(ExitTarget::Port(443)));
        assert!(!partial.allows(ExitTarget::Port(80)));
        assert!(!partial.allows(ExitTarget::Addr("10.1.1.1".parse().unwrap(), 443)));
    }

    #[test]
    fn unknown_address_port_check_is_the_ipv4_might_support_rule() {
        let rules = |lines: &[(&str, &str)]| ExitPolicy {
            rules: lines
                .iter()
                .map(|(k, v)| PolicyRule::parse(k, v).unwrap())
                .collect(),
        };
        // `reject *4:*` refuses every IPv4 address: no port "might" be supported for a name
        // that resolves to IPv4 (path-spec §2.2.1).
        let v4_closed = rules(&[("reject", "*4:*"), ("accept", "*:*")]);
        assert!(!v4_closed.allows_port(80));
        // An IPv6-only accept does not make an IPv4 exit.
        let v6_only = rules(&[("accept6", "[::]/0:80"), ("reject", "*:*")]);
        assert!(!v6_only.allows_port(80));
        // The full-policy and path-selection views give the same answer.
        for p in [&v4_closed, &v6_only] {
            let full = RelayPolicy::Full {
                rules: p.clone(),
                ipv6_policy: PortSet::none(),
            };
            assert_eq!(full.allows(ExitTarget::Port(80)), p.allows_port(80));
        }
    }

    #[test]
    fn summary() {
        let s = PolicySummary::parse("accept 80,443,1000-2000").unwrap();
        assert!(s.allows_port(80) && s.allows_port(1500) && !s.allows_port(22));
        let r = PolicySummary::parse("reject 1-65535").unwrap();
        assert!(!r.allows_port(80) && !r.allows_some_port());
        let r = PolicySummary::parse("reject 25,119").unwrap();
        assert!(r.allows_port(80) && !r.allows_port(25) && r.allows_some_port());
        assert!(PolicySummary::parse("accept 0").is_none());
        assert!(PolicySummary::parse("accept 5-1").is_none());
        assert!(PolicySummary::parse("maybe 80").is_none());
        assert_eq!(s.to_string(), "accept 80,443,1000-2000");
    }

    #[test]
    fn full() {
        let p = ExitPolicy {
            rules: vec![
                PolicyRule::parse("accept", "127.0.0.0/8:*").unwrap(),
                PolicyRule::parse("reject", "*:25").unwrap(),
                PolicyRule::parse("accept6", "[2001:db8::]/32:80-81").unwrap(),
                PolicyRule::parse("accept", "10.0.0.0/255.0.0.0:443").unwrap(),
                PolicyRule::parse("reject", "*:*").unwrap(),
            ],
        };
        assert!(p.allows("127.0.0.1".parse().unwrap(), 25));
        assert!(!p.allows("8.8.8.8".parse().unwrap(), 25));
        assert!(p.allows("2001:db8::1".parse().unwrap(), 80));
        assert!(!p.allows("2001:db9::1".parse().unwrap(), 80));
        assert!(p.allows("10.1.2.3".parse().unwrap(), 443));
        assert!(!p.allows("11.1.2.3".parse().unwrap(), 443));
        assert!(p.allows_port(443));
        assert!(p.allows_port(22)); // 127/8 accepts every port
        assert!(PolicyRule::parse("accept6", "1.2.3.4:80").is_none());
        assert!(PolicyRule::parse("accept", "1.2.3.4/33:80").is_none());
        assert!(PolicyRule::parse("accept", "1.2.3.4/255.0.255.0:80").is_none());
        // Hand-built prefixes out of range do not panic.
        let odd = PolicyRule {
            accept: true,
            v6_only: false,
            addr: AddrPattern::V4(Ipv4Addr::LOCALHOST, 99),
            ports: PortRange::ALL,
        };
        assert!(odd.matches("127.0.0.1".parse().unwrap(), 1));
        let odd6 = PolicyRule {
            accept: true,
            v6_only: false,
            addr: AddrPattern::V6(Ipv6Addr::LOCALHOST, 200),
            ports: PortRange::ALL,
        };
        assert!(odd6.matches("::1".parse().unwrap(), 1));
        assert!(!odd6.matches("::2".parse().unwrap(), 1));
        let none = ExitPolicy {
            rules: vec![PolicyRule::parse("reject", "*:*").unwrap()],
        };
        assert!(!none.allows_port(80));
    }

    fn arb_range() -> impl Strategy<Value = PortRange> {
        (1u16..=65535, 0u16..1000).prop_map(|(lo, d)| PortRange {
            lo,
            hi: lo.saturating_add(d),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn some_port_matches_every_port(accept: bool, ranges in proptest::collection::vec(
            (1u16..=65535, 0u16..40000).prop_map(|(lo, w)| PortRange { lo, hi: lo.saturating_add(w) }), 0..8)) {
            let s = PolicySummary { accept, ranges };
            prop_assert_eq!(s.allows_some_port(), (1..=65535).any(|p| s.allows_port(p)));
        }
    }

    proptest! {
        #[test]
        fn summary_roundtrip(accept: bool, ranges in proptest::collection::vec(arb_range(), 1..20)) {
            let s = PolicySummary { accept, ranges };
            prop_assert_eq!(PolicySummary::parse(&s.to_string()), Some(s));
        }

        #[test]
        fn rule_roundtrip(accept: bool, a: [u8; 4], bits in 0u8..=32, r in arb_range(), v6: [u8; 16], bits6 in 0u8..=128, which in 0..5u8) {
            let addr = match which {
                0 => AddrPattern::Any,
                1 => AddrPattern::Any4,
                2 => AddrPattern::Any6,
                3 => AddrPattern::V4(Ipv4Addr::from(a), bits),
                _ => AddrPattern::V6(Ipv6Addr::from(v6), bits6),
            };
            let rule = PolicyRule { accept, v6_only: false, addr, ports: r };
            let text = rule.to_string();
            let (kw, pat) = text.split_once(' ').unwrap();
            prop_assert_eq!(PolicyRule::parse(kw, pat), Some(rule));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}", kw in "(accept|reject)6?") {
            let _ = PolicySummary::parse(&s);
            let _ = PolicyRule::parse(&kw, &s);
        }
    }
}
