//! Fuzz the congestion-control machine (proposal 324, Tor Vegas) with arbitrary parameters
//! and event sequences: DATA cells sent, SENDMEs at arbitrary delays (zero, huge, backwards
//! in time), blocked-channel signals. It must never panic, never let more cells in flight
//! than the window allows when sending, keep the window within `cwnd_max`, and report a
//! SENDME with nothing to acknowledge as an error.
#![no_main]

use core::time::Duration;

use libfuzzer_sys::fuzz_target;
use onion_circuit::cc::{CcConfig, CcError, CongestionControl};
use onion_circuit::Instant;

fn u32_at(d: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    let (head, ops) = data.split_at(40);
    let cfg = CcConfig {
        sendme_inc: head[0],
        cwnd_init: u32_at(head, 1) % 10_001,
        cwnd_inc_pct_ss: u32_at(head, 5) % 501,
        cwnd_inc: u32_at(head, 9) % 1001,
        cwnd_inc_rate: u32_at(head, 13) % 251,
        cwnd_min: u32_at(head, 17) % 1001,
        cwnd_max: u32_at(head, 21).max(1),
        rtt_reset_pct: head[25],
        ewma_cwnd_pct: head[26],
        ewma_max: head[27],
        ewma_ss: head[28],
        alpha: u32::from(head[29]) * 4,
        beta: u32::from(head[30]) * 4,
        gamma: u32::from(head[31]) * 4,
        delta: u32::from(head[32]) * 4,
        ss_cwnd_cap: u32::from(head[33]) * 8,
        ss_cwnd_max: u32::from(head[34]) * 40,
        cwnd_full_gap: u32::from(head[35]),
        cwnd_full_minpct: u32::from(head[36]),
        cwnd_full_per_cwnd: head[37] & 1 == 1,
    };
    let mut cc = CongestionControl::new(cfg);
    let mut now = Instant::from_nanos(u64::from(u32_at(head, 38)));
    for op in ops.chunks(3) {
        let arg = u64::from(u16::from_le_bytes([
            op.get(1).copied().unwrap_or(0),
            op.get(2).copied().unwrap_or(0),
        ]));
        match op[0] % 4 {
            0 => {
                for _ in 0..arg % 512 {
                    if cc.on_data_sent(now).is_none() {
                        assert!(!cc.can_send());
                        break;
                    }
                    assert!(cc.inflight() <= cc.cwnd());
                }
            }
            1 => now = now + Duration::from_micros(arg * arg),
            2 => {
                let before = cc.inflight();
                match cc.on_sendme(now, op[0] & 0x80 != 0, arg) {
                    // Nothing changes on a SENDME nobody asked for.
                    Err(CcError::UnexpectedSendme) => assert_eq!(cc.inflight(), before),
                    Err(e) => panic!("{e}"),
                    Ok(()) => assert!(cc.inflight() < before.max(1)),
                }
            }
            _ => now = Instant::from_nanos(now.as_nanos().saturating_sub(arg)),
        }
        assert!(cc.cwnd() <= u64::from(cfg.cwnd_max).max(u64::from(cfg.cwnd_init)));
    }
});
