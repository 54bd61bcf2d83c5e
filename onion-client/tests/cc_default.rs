//! The Client asks for congestion control by default, as C tor 0.4.9 does: the setting
//! takes effect only while the consensus enables it (`cc_alg` not 0, proposal 324 §6.5.1),
//! so a client on a network without it keeps fixed windows.

use onion_client::dir::{DirConfig, DirMode};
use onion_client::ClientConfig;

#[test]
fn congestion_control_is_on_by_default() {
    let cfg = ClientConfig::new(DirConfig::new(vec![], vec![], DirMode::Micro));
    assert!(cfg.congestion_control);
}
