//! Congestion-control parameters read from real consensuses: the public network's of
//! November 2022 (which sets some `cc_*` values) and the private C tor network's (which sets
//! none, so every value is C tor's default).

use std::io::Read;

use onion_dir::ccparams::{CcParams, CcPath, CC_ALG_VEGAS};
use onion_dir::consensus;

fn read_gz(name: &str) -> String {
    let p = format!("{}/testdata/real/{name}.gz", env!("CARGO_MANIFEST_DIR"));
    let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut s = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn public_consensus_2022_values_override_defaults() {
    let text = read_gz("real-microdesc-consensus-2022-11-19.txt");
    let c = consensus::parse(&text).unwrap().assume_verified();
    let p = CcParams::from_consensus(&c);
    // params: cc_alg=2 cc_cwnd_inc=1 cc_cwnd_inc_rate=31 cc_sscap_exit=400
    // cc_sscap_onion=425 cc_vegas_alpha_exit=155 cc_vegas_beta_onion=372
    // cc_vegas_delta_exit=310 cc_vegas_delta_onion=434 cc_vegas_gamma_onion=248
    assert_eq!(p.alg, CC_ALG_VEGAS);
    assert_eq!((p.cwnd_inc, p.cwnd_inc_rate), (1, 31));
    let e = p.vegas(CcPath::Exit);
    assert_eq!((e.alpha, e.delta, e.ss_cwnd_cap), (155, 310, 400));
    // Not in the consensus: C tor's defaults.
    assert_eq!((e.beta, e.gamma), (248, 186));
    let o = p.vegas(CcPath::Onion);
    assert_eq!(
        (o.beta, o.delta, o.gamma, o.ss_cwnd_cap),
        (372, 434, 248, 425)
    );
    assert_eq!(o.alpha, 186);
    assert_eq!((p.sendme_inc, p.cwnd_init, p.cwnd_min), (31, 124, 124));
}

#[test]
fn private_network_consensus_has_c_tor_defaults() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/tornet/cached-microdesc-consensus"
    ));
    let c = consensus::parse(text).unwrap().assume_verified();
    assert!(c.params.entries.iter().all(|(k, _)| !k.starts_with("cc_")));
    assert_eq!(CcParams::from_consensus(&c), CcParams::default());
    assert!(CcParams::default().enabled());
}
