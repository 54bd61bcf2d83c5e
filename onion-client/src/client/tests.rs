//! Unit tests of the client machine's parts (the machine as a whole is tested over an
//! in-process network in `tests/client.rs`).

use super::chan::Chan;
use super::circ::Circ;
use super::stream::Stream;

#[test]
fn state_sizes_stay_small() {
    let sizes = [
        ("Stream", std::mem::size_of::<Stream>()),
        ("Circ", std::mem::size_of::<Circ>()),
        ("Chan", std::mem::size_of::<Chan>()),
        ("Error", std::mem::size_of::<crate::Error>()),
        (
            "circuit Stream",
            std::mem::size_of::<onion_circuit::stream::Stream>(),
        ),
    ];
    println!("{sizes:?}");
    // An idle application stream's own state (its buffers allocate nothing while empty).
    assert!(sizes[0].1 <= 256, "{sizes:?}");
}
