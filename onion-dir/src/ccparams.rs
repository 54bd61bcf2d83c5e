//! Congestion-control consensus parameters (proposal 324 §6.5, param-spec "cc_*").
//!
//! Every parameter that C tor 0.4.9 reads for congestion control (common parameters in
//! `congestion_control_common.c`, Tor Vegas in `congestion_control_vegas.c`, stream flow
//! control in `congestion_control_flow.c`), with C tor's default and its `[min, max]` range.
//! A value outside its range is clamped into it, as `networkstatus_get_param` does; an
//! absent value takes the default.
//!
//! Two C tor quirks are kept on purpose so that onion behaves as its peers do:
//! - `cc_ewma_max` and `cc_ewma_ss` are range-checked as 32-bit values and then stored in
//!   8 bits (so `cc_ewma_max=300` means 44); the EWMA count is never below 2 anyway.
//! - `cc_alg` other than 0 (fixed windows) or 2 (Vegas) — the retired Westwood (1) and
//!   NOLA (3) — falls back to Vegas.
//!
//! The Vegas thresholds depend on the kind of path (proposal 324 §3.3 and §6.5.3):
//! [`CcPath::Exit`] for exit circuits (and single-onion-service rendezvous),
//! [`CcPath::Onion`] for onion-service circuits, [`CcPath::Sbws`] for two-hop bandwidth
//! scanner circuits.

use crate::consensus::{Consensus, NetParams};

/// Cells in one TLS record (16 KiB / 514-byte cells), C tor's unit for windows.
const TLS_RECORD_MAX_CELLS: i32 = (16 * 1024) / 514;
/// Cells in one OR-connection output buffer, the unit of the Vegas thresholds.
const OUTBUF_CELLS: i32 = 2 * TLS_RECORD_MAX_CELLS;

/// `cc_alg` value for fixed windows (tor-spec §7.3, no congestion control).
pub const CC_ALG_SENDME: u8 = 0;
/// `cc_alg` value for Tor Vegas (proposal 324 §3.3).
pub const CC_ALG_VEGAS: u8 = 2;

/// The kind of path a congestion-controlled circuit runs on, which picks the Vegas
/// parameter set (proposal 324 §6.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CcPath {
    /// An exit circuit (three hops), or a single onion service's rendezvous circuit.
    Exit,
    /// An onion-service circuit (client and service rendezvous, six or more hops).
    Onion,
    /// A two-hop bandwidth-scanner circuit.
    Sbws,
}

/// Tor Vegas parameters for one kind of path (proposal 324 §3.3, §6.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VegasParams {
    /// `cc_vegas_alpha_*`: below this queue use (cells), grow cwnd after slow start.
    pub alpha: u32,
    /// `cc_vegas_beta_*`: above this queue use, shrink cwnd after slow start.
    pub beta: u32,
    /// `cc_vegas_gamma_*`: at or above this queue use, leave slow start.
    pub gamma: u32,
    /// `cc_vegas_delta_*`: above this queue use, cut cwnd down to BDP + delta.
    pub delta: u32,
    /// `cc_sscap_*`: the RFC 3742 limited-slow-start cap (cells).
    pub ss_cwnd_cap: u32,
    /// `cc_ss_max`: slow start ends when cwnd reaches this (cells).
    pub ss_cwnd_max: u32,
    /// `cc_cwnd_full_gap`: cwnd counts as full while inflight is within this many
    /// `sendme_inc` of it.
    pub cwnd_full_gap: u32,
    /// `cc_cwnd_full_minpct`: cwnd counts as not full once inflight drops below this
    /// percentage of it.
    pub cwnd_full_minpct: u32,
    /// `cc_cwnd_full_per_cwnd`: 1 = forget "full" once per cwnd of SENDMEs, 0 = at each
    /// cwnd update.
    pub cwnd_full_per_cwnd: bool,
}

/// Every congestion-control consensus parameter C tor 0.4.9 reads, clamped and defaulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcParams {
    /// `cc_alg`: [`CC_ALG_SENDME`] (0) or [`CC_ALG_VEGAS`] (2). Default 2.
    pub alg: u8,
    /// `cc_sendme_inc`: cells acknowledged by one SENDME, [1, 254], default 31.
    pub sendme_inc: u8,
    /// `cc_cwnd_init`: initial cwnd, [31, 10000], default 124.
    pub cwnd_init: u32,
    /// `cc_cwnd_inc_pct_ss`: slow-start increment, percent of `sendme_inc`, [1, 500], default 100.
    pub cwnd_inc_pct_ss: u32,
    /// `cc_cwnd_inc`: steady-state increment/decrement (cells), [1, 1000], default 1.
    pub cwnd_inc: u32,
    /// `cc_cwnd_inc_rate`: cwnd updates per cwnd of SENDMEs, [1, 250], default 31.
    pub cwnd_inc_rate: u32,
    /// `cc_cwnd_min`: the smallest cwnd, [31, 1000], default 124.
    pub cwnd_min: u32,
    /// `cc_cwnd_max`: the largest cwnd, [500, 2^31-1], default 2^31-1.
    pub cwnd_max: u32,
    /// `cc_rtt_reset_pct`: weight of the current RTT when min-RTT is reset at cwnd_min,
    /// [0, 100], default 100.
    pub rtt_reset_pct: u8,
    /// `cc_bwe_min`: SENDMEs before a bandwidth estimate, [2, 20], default 5 (read by C tor,
    /// unused by Vegas).
    pub bwe_min: u8,
    /// `cc_ewma_cwnd_pct`: EWMA count as a percentage of SENDMEs per cwnd, [1, 255], default 50.
    pub ewma_cwnd_pct: u8,
    /// `cc_ewma_max`: the largest EWMA count, [2, 2^31-1] stored in 8 bits, default 10.
    pub ewma_max: u8,
    /// `cc_ewma_ss`: the EWMA count in slow start, [2, 2^31-1] stored in 8 bits, default 2.
    pub ewma_ss: u8,
    /// Vegas parameters for exit circuits.
    pub vegas_exit: VegasParams,
    /// Vegas parameters for onion-service circuits.
    pub vegas_onion: VegasParams,
    /// Vegas parameters for bandwidth-scanner circuits.
    pub vegas_sbws: VegasParams,
    /// `cc_xoff_client`: queued cells at a client edge before XOFF, [1, 10000], default 500.
    pub xoff_client: u32,
    /// `cc_xoff_exit`: queued cells at an exit edge before XOFF, [1, 10000], default 500.
    pub xoff_exit: u32,
    /// `cc_xon_change_pct`: drain-rate change that triggers an advisory XON, [1, 99], default 25.
    pub xon_change_pct: u32,
    /// `cc_xon_rate`: cells of data between drain-rate measurements, [1, 5000], default 500.
    pub xon_rate: u32,
    /// `cc_xon_ewma_cnt`: N of the drain-rate N-EWMA, [2, 100], default 2.
    pub xon_ewma_cnt: u32,
}

impl Default for CcParams {
    /// C tor 0.4.9's defaults: the values used when the consensus names none.
    fn default() -> Self {
        Self::from_net_params(&NetParams::default())
    }
}

/// One congestion-control consensus parameter as C tor 0.4.9 reads it: its name, the value
/// used when the consensus names none, and the range a value is clamped into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcParamSpec {
    /// The `params` keyword, e.g. `cc_sscap_exit`.
    pub name: &'static str,
    /// C tor's default.
    pub default: i32,
    /// The smallest value C tor keeps.
    pub min: i32,
    /// The largest value C tor keeps.
    pub max: i32,
}

const fn spec(name: &'static str, default: i32, min: i32, max: i32) -> CcParamSpec {
    CcParamSpec {
        name,
        default,
        min,
        max,
    }
}

const T: i32 = TLS_RECORD_MAX_CELLS;
const O: i32 = OUTBUF_CELLS;
const MAX: i32 = i32::MAX;

/// Every `cc_*` parameter C tor 0.4.9 reads, with its default and range: the one table
/// [`CcParams::from_net_params`] clamps with, and that tools setting values check against.
pub const CC_PARAMS: &[CcParamSpec] = &[
    spec("cc_alg", 2, 0, 3),
    spec("cc_sendme_inc", T, 1, 254),
    spec("cc_cwnd_init", 4 * T, T, 10_000),
    spec("cc_cwnd_inc_pct_ss", 100, 1, 500),
    spec("cc_cwnd_inc", 1, 1, 1000),
    spec("cc_cwnd_inc_rate", T, 1, 250),
    spec("cc_cwnd_min", 4 * T, T, 1000),
    spec("cc_cwnd_max", MAX, 500, MAX),
    spec("cc_rtt_reset_pct", 100, 0, 100),
    spec("cc_bwe_min", 5, 2, 20),
    spec("cc_ewma_cwnd_pct", 50, 1, 255),
    spec("cc_ewma_max", 10, 2, MAX),
    spec("cc_ewma_ss", 2, 2, MAX),
    spec("cc_cwnd_full_minpct", 25, 0, 100),
    spec("cc_cwnd_full_gap", 4, 0, i16::MAX as i32),
    spec("cc_cwnd_full_per_cwnd", 1, 0, 1),
    spec("cc_ss_max", 5000, 500, MAX),
    spec("cc_vegas_alpha_exit", 3 * O, 0, 1000),
    spec("cc_vegas_beta_exit", 4 * O, 0, 1000),
    spec("cc_vegas_gamma_exit", 3 * O, 0, 1000),
    spec("cc_vegas_delta_exit", 5 * O, 0, MAX),
    spec("cc_sscap_exit", 600, 100, MAX),
    spec("cc_vegas_alpha_onion", 3 * O, 0, 1000),
    spec("cc_vegas_beta_onion", 6 * O, 0, 1000),
    spec("cc_vegas_gamma_onion", 4 * O, 0, 1000),
    spec("cc_vegas_delta_onion", 7 * O, 0, MAX),
    spec("cc_sscap_onion", 475, 100, MAX),
    spec("cc_vegas_alpha_sbws", 2 * O - T, 0, 1000),
    spec("cc_vegas_beta_sbws", 2 * O + T, 0, 1000),
    spec("cc_vegas_gamma_sbws", 2 * O, 0, 1000),
    spec("cc_vegas_delta_sbws", 4 * O, 0, MAX),
    spec("cc_sscap_sbws", 400, 100, MAX),
    spec("cc_xoff_client", 500, 1, 10_000),
    spec("cc_xoff_exit", 500, 1, 10_000),
    spec("cc_xon_change_pct", 25, 1, 99),
    spec("cc_xon_rate", 500, 1, 5000),
    spec("cc_xon_ewma_cnt", 2, 2, 100),
];

/// The default and range of the `cc_*` parameter `name`; `None` if C tor reads no such
/// congestion-control parameter.
pub fn cc_param_spec(name: &str) -> Option<&'static CcParamSpec> {
    CC_PARAMS.iter().find(|s| s.name == name)
}

/// `networkstatus_get_param` with `name`'s entry of [`CC_PARAMS`]: the value clamped into
/// its range, or its default (0 for a name not in the table, which the tests rule out).
fn get(p: &NetParams<'_>, name: &str) -> i32 {
    cc_param_spec(name).map_or(0, |s| p.get_clamped(name, s.default, s.min, s.max))
}

/// A value already known to lie in `[0, i32::MAX]` as `u32`.
fn nonneg(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl CcParams {
    /// The parameters of a verified consensus's `params` line.
    pub fn from_consensus(c: &Consensus<'_>) -> Self {
        Self::from_net_params(&c.params)
    }

    /// The parameters of a `params` line (param-spec), each clamped or defaulted as C tor does.
    pub fn from_net_params(p: &NetParams<'_>) -> Self {
        let alg = match get(p, "cc_alg") {
            0 => CC_ALG_SENDME,
            _ => CC_ALG_VEGAS,
        };
        let sendme_inc = get(p, "cc_sendme_inc");
        let full_minpct = nonneg(get(p, "cc_cwnd_full_minpct"));
        let full_gap = nonneg(get(p, "cc_cwnd_full_gap"));
        let full_per_cwnd = get(p, "cc_cwnd_full_per_cwnd") == 1;
        let ss_max = nonneg(get(p, "cc_ss_max"));
        let vegas = |suffix: &str| VegasParams {
            alpha: nonneg(get(p, &format!("cc_vegas_alpha_{suffix}"))),
            beta: nonneg(get(p, &format!("cc_vegas_beta_{suffix}"))),
            gamma: nonneg(get(p, &format!("cc_vegas_gamma_{suffix}"))),
            delta: nonneg(get(p, &format!("cc_vegas_delta_{suffix}"))),
            ss_cwnd_cap: nonneg(get(p, &format!("cc_sscap_{suffix}"))),
            ss_cwnd_max: ss_max,
            cwnd_full_gap: full_gap,
            cwnd_full_minpct: full_minpct,
            cwnd_full_per_cwnd: full_per_cwnd,
        };
        CcParams {
            alg,
            sendme_inc: u8::try_from(sendme_inc).unwrap_or(31),
            cwnd_init: nonneg(get(p, "cc_cwnd_init")),
            cwnd_inc_pct_ss: nonneg(get(p, "cc_cwnd_inc_pct_ss")),
            cwnd_inc: nonneg(get(p, "cc_cwnd_inc")),
            cwnd_inc_rate: nonneg(get(p, "cc_cwnd_inc_rate")),
            cwnd_min: nonneg(get(p, "cc_cwnd_min")),
            cwnd_max: nonneg(get(p, "cc_cwnd_max")),
            rtt_reset_pct: low_byte(get(p, "cc_rtt_reset_pct")),
            bwe_min: low_byte(get(p, "cc_bwe_min")),
            ewma_cwnd_pct: low_byte(get(p, "cc_ewma_cwnd_pct")),
            ewma_max: low_byte(get(p, "cc_ewma_max")),
            ewma_ss: low_byte(get(p, "cc_ewma_ss")),
            vegas_exit: vegas("exit"),
            vegas_onion: vegas("onion"),
            vegas_sbws: vegas("sbws"),
            xoff_client: nonneg(get(p, "cc_xoff_client")),
            xoff_exit: nonneg(get(p, "cc_xoff_exit")),
            xon_change_pct: nonneg(get(p, "cc_xon_change_pct")),
            xon_rate: nonneg(get(p, "cc_xon_rate")),
            xon_ewma_cnt: nonneg(get(p, "cc_xon_ewma_cnt")),
        }
    }

    /// Whether the network runs congestion control (`cc_alg` is not 0): clients then ask
    /// for it in ntor-v3 handshakes with relays that support it (proposal 324 §4.1).
    pub fn enabled(&self) -> bool {
        self.alg != CC_ALG_SENDME
    }

    /// The Vegas parameter set for `path`.
    pub fn vegas(&self, path: CcPath) -> &VegasParams {
        match path {
            CcPath::Exit => &self.vegas_exit,
            CcPath::Onion => &self.vegas_onion,
            CcPath::Sbws => &self.vegas_sbws,
        }
    }

    /// Whether a relay's negotiated `sendme_inc` is acceptable: C tor accepts only the
    /// consensus value plus or minus one, never 0 (proposal 324 §6.5.1, `cc_sendme_inc`;
    /// C tor's `congestion_control_validate_sendme_increment`, the same rule for an exit's
    /// CC_FIELD_RESPONSE and a descriptor's `flow-control`). The bounds are computed in
    /// `i32` so that a consensus value of 254 admits 255 and one of 1 admits only 1 and 2.
    pub fn sendme_inc_acceptable(&self, sendme_inc: u8) -> bool {
        let c = i32::from(self.sendme_inc);
        let v = i32::from(sendme_inc);
        v != 0 && (c - 1..=c + 1).contains(&v)
    }
}

/// C tor keeps these parameters in a `uint8_t`: the low 8 bits of the clamped value.
fn low_byte(v: i32) -> u8 {
    v.to_le_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &'static str) -> NetParams<'static> {
        NetParams {
            entries: s
                .split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k, v.parse().unwrap())
                })
                .collect(),
        }
    }

    #[test]
    fn defaults_are_c_tor_0_4_9() {
        let d = CcParams::default();
        assert_eq!(d.alg, 2);
        assert_eq!(d.sendme_inc, 31);
        assert_eq!(
            (d.cwnd_init, d.cwnd_min, d.cwnd_max),
            (124, 124, 2_147_483_647)
        );
        assert_eq!(
            (d.cwnd_inc, d.cwnd_inc_rate, d.cwnd_inc_pct_ss),
            (1, 31, 100)
        );
        assert_eq!((d.ewma_cwnd_pct, d.ewma_max, d.ewma_ss), (50, 10, 2));
        assert_eq!((d.rtt_reset_pct, d.bwe_min), (100, 5));
        let e = d.vegas(CcPath::Exit);
        assert_eq!(
            (
                e.alpha,
                e.beta,
                e.gamma,
                e.delta,
                e.ss_cwnd_cap,
                e.ss_cwnd_max
            ),
            (186, 248, 186, 310, 600, 5000)
        );
        assert_eq!(
            (e.cwnd_full_gap, e.cwnd_full_minpct, e.cwnd_full_per_cwnd),
            (4, 25, true)
        );
        let o = d.vegas(CcPath::Onion);
        assert_eq!(
            (o.alpha, o.beta, o.gamma, o.delta, o.ss_cwnd_cap),
            (186, 372, 248, 434, 475)
        );
        let s = d.vegas(CcPath::Sbws);
        assert_eq!(
            (s.alpha, s.beta, s.gamma, s.delta, s.ss_cwnd_cap),
            (93, 155, 124, 248, 400)
        );
        assert_eq!(
            (d.xoff_client, d.xoff_exit, d.xon_change_pct),
            (500, 500, 25)
        );
        assert_eq!((d.xon_rate, d.xon_ewma_cnt), (500, 2));
        assert!(d.enabled());
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let p = CcParams::from_net_params(&params(
            "cc_alg=-5 cc_sendme_inc=0 cc_cwnd_init=1 cc_cwnd_min=5000 cc_cwnd_max=10 \
             cc_cwnd_inc=0 cc_cwnd_inc_rate=999 cc_cwnd_inc_pct_ss=9999 cc_rtt_reset_pct=101 \
             cc_vegas_alpha_exit=-1 cc_vegas_beta_exit=1001 cc_sscap_exit=1 cc_ss_max=2 \
             cc_cwnd_full_gap=40000 cc_cwnd_full_minpct=200 cc_cwnd_full_per_cwnd=7 \
             cc_xoff_client=0 cc_xon_change_pct=100 cc_xon_ewma_cnt=1000 cc_bwe_min=1",
        ));
        assert_eq!(p.alg, CC_ALG_SENDME);
        assert!(!p.enabled());
        assert_eq!(p.sendme_inc, 1);
        assert_eq!((p.cwnd_init, p.cwnd_min, p.cwnd_max), (31, 1000, 500));
        assert_eq!(
            (p.cwnd_inc, p.cwnd_inc_rate, p.cwnd_inc_pct_ss),
            (1, 250, 500)
        );
        assert_eq!(p.rtt_reset_pct, 100);
        let e = p.vegas(CcPath::Exit);
        assert_eq!(
            (e.alpha, e.beta, e.ss_cwnd_cap, e.ss_cwnd_max),
            (0, 1000, 100, 500)
        );
        assert_eq!(
            (e.cwnd_full_gap, e.cwnd_full_minpct, e.cwnd_full_per_cwnd),
            (32767, 100, true)
        );
        assert_eq!(
            (p.xoff_client, p.xon_change_pct, p.xon_ewma_cnt),
            (1, 99, 100)
        );
        assert_eq!(p.bwe_min, 2);
        // The onion set is untouched by the exit names.
        assert_eq!(p.vegas(CcPath::Onion).alpha, 186);
    }

    #[test]
    fn the_table_names_each_parameter_once_with_its_default_in_range() {
        for (i, s) in CC_PARAMS.iter().enumerate() {
            assert!(s.min <= s.default && s.default <= s.max, "{}", s.name);
            assert!(
                CC_PARAMS[i + 1..].iter().all(|t| t.name != s.name),
                "{}",
                s.name
            );
            assert_eq!(cc_param_spec(s.name), Some(s));
        }
        assert_eq!(cc_param_spec("cc_sscap_exit").map(|s| s.min), Some(100));
        assert!(cc_param_spec("cc_nonesuch").is_none());
    }

    #[test]
    fn retired_algorithms_fall_back_to_vegas_and_u8_fields_wrap() {
        for alg in ["1", "3", "99"] {
            let text: &'static str = Box::leak(format!("cc_alg={alg}").into_boxed_str());
            assert_eq!(CcParams::from_net_params(&params(text)).alg, CC_ALG_VEGAS);
        }
        let p = CcParams::from_net_params(&params("cc_ewma_max=300 cc_ewma_ss=258"));
        assert_eq!((p.ewma_max, p.ewma_ss), (44, 2));
    }

    #[test]
    fn sendme_inc_is_acceptable_within_one_of_the_consensus() {
        let d = CcParams::default();
        assert!(!d.sendme_inc_acceptable(0));
        assert!(!d.sendme_inc_acceptable(29));
        assert!(d.sendme_inc_acceptable(30));
        assert!(d.sendme_inc_acceptable(31));
        assert!(d.sendme_inc_acceptable(32));
        assert!(!d.sendme_inc_acceptable(33));
        let one = CcParams::from_net_params(&params("cc_sendme_inc=1"));
        assert!(!one.sendme_inc_acceptable(0));
        assert!(one.sendme_inc_acceptable(1) && one.sendme_inc_acceptable(2));
        assert!(!one.sendme_inc_acceptable(3));
        // The consensus maximum, 254: C tor compares in `int`, so 255 (one above) is
        // accepted and nothing wraps.
        let max = CcParams::from_net_params(&params("cc_sendme_inc=254"));
        assert!(!max.sendme_inc_acceptable(252));
        assert!(max.sendme_inc_acceptable(253));
        assert!(max.sendme_inc_acceptable(254));
        assert!(max.sendme_inc_acceptable(255));
        // Above the maximum the consensus value is clamped to 254 first.
        let over = CcParams::from_net_params(&params("cc_sendme_inc=300"));
        assert_eq!(over.sendme_inc, 254);
        assert!(over.sendme_inc_acceptable(255) && !over.sendme_inc_acceptable(252));
    }
}
