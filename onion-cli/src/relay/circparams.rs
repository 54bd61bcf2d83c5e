//! What circuits ending at `onion relay` offer, from the consensus `params` line: congestion
//! control (proposal 324 §6.5, the Vegas values of exit paths, as a C tor relay runs them)
//! and stream flow control (proposal 324 §4, `cc_xoff_exit` and the `cc_xon_*` values).
//!
//! The descriptor advertises `FlowCtrl=2` (`onion_dir::relaydesc::ONION_RELAY_PROTOCOLS`),
//! so a C tor client asks for congestion control in its ntor-v3 handshake; the relay must then
//! answer with `sendme_inc` and run it, unless the network turned it off (`cc_alg=0`), when
//! the relay answers with an empty extension list and runs fixed windows (tor-spec §7.3).

use onion_circuit::cc::flowctl::FlowCtrlParams;
use onion_circuit::relay::RelayConfig as CircRelayConfig;
use onion_dir::ccparams::{CcParams, CcPath};
use onion_dir::consensus::NetParams;

/// The circuit configuration for a network whose consensus has `params` (an empty list
/// before the relay holds a consensus: C tor's defaults, as C tor's relay uses then).
pub fn circuit_config(params: &NetParams<'_>) -> CircRelayConfig {
    let p = CcParams::from_net_params(params);
    let congestion_control = onion_client::dir::cc_config(&p, CcPath::Exit);
    CircRelayConfig {
        congestion_control,
        flow_control: FlowCtrlParams {
            xoff_client: p.xoff_client,
            xoff_exit: p.xoff_exit,
            xon_change_pct: p.xon_change_pct,
            xon_rate: p.xon_rate,
            xon_ewma_cnt: p.xon_ewma_cnt,
        },
    }
}

/// What `onion relay` takes from a new consensus whose `params` line is `params`: the
/// circuit configuration above and the per-circuit queue bound
/// (`circ_max_cell_queue_size`), for `onion_relay::Relay::set_consensus_params`.
pub fn consensus_params(params: &NetParams<'_>) -> onion_relay::ConsensusParams {
    onion_relay::ConsensusParams::new(circuit_config(params), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_congestion_control_with_exit_vegas() {
        let c = circuit_config(&NetParams::default());
        let cc = c.congestion_control.expect("cc_alg defaults to Vegas");
        assert_eq!(cc.sendme_inc, 31);
        // C tor's exit-path Vegas defaults: alpha 3, beta 4, gamma 3, delta 5 outbuf
        // sizes (62 cells), sscap 600.
        assert_eq!(
            (cc.alpha, cc.beta, cc.gamma, cc.delta),
            (186, 248, 186, 310)
        );
        assert_eq!(cc.ss_cwnd_cap, 600);
        assert_eq!(c.flow_control, FlowCtrlParams::default());
    }

    #[test]
    fn consensus_values_are_used() {
        let p = NetParams {
            entries: vec![
                ("cc_sendme_inc", 33),
                ("cc_vegas_alpha_exit", 100),
                ("cc_vegas_alpha_onion", 7),
                ("cc_xoff_exit", 250),
            ],
        };
        let c = circuit_config(&p);
        let cc = c.congestion_control.expect("enabled");
        assert_eq!(cc.sendme_inc, 33);
        assert_eq!(cc.alpha, 100);
        assert_eq!(c.flow_control.xoff_exit, 250);
    }

    #[test]
    fn a_consensus_sets_circuits_and_the_queue_bound() {
        let p = NetParams {
            entries: vec![("cc_sendme_inc", 40), ("circ_max_cell_queue_size", 2000)],
        };
        let c = consensus_params(&p);
        assert_eq!(c.circuits.congestion_control.expect("on").sendme_inc, 40);
        assert_eq!(c.circuit_queue_cells, 2000);
        let c = consensus_params(&NetParams::default());
        assert_eq!(c.circuit_queue_cells, 50_000);
    }

    #[test]
    fn cc_alg_zero_means_fixed_windows() {
        let p = NetParams {
            entries: vec![("cc_alg", 0)],
        };
        assert!(circuit_config(&p).congestion_control.is_none());
    }
}
