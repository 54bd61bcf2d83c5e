//! Small encoding helpers shared by the descriptor code.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// Base64 that accepts input with or without `=` padding (Tor documents use both).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 without padding (as Tor writes keys in descriptors).
pub(crate) fn b64_nopad(data: &[u8]) -> String {
    STANDARD_NO_PAD.encode(data)
}

/// Standard base64 with padding.
pub(crate) fn b64_pad(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decode base64 with or without padding; `None` when invalid.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    LENIENT.decode(s.trim_end()).ok()
}

/// Decode base64 into exactly `N` bytes.
pub(crate) fn b64_decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Bound the work: N bytes need at most 4*ceil(N/3) characters.
    if s.len() > 4 * N.div_ceil(3) {
        return None;
    }
    b64_decode(s)?.try_into().ok()
}
