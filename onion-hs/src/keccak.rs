//! Keccak-f\[1600\] in safe, portable Rust, for the onion-address checksum (rend-spec-v3 §6).
//!
//! The permutation is FIPS 202 §3.3 (Keccak-p\[1600, 24\]), written for speed on 64-bit CPUs
//! without SIMD or special instructions:
//!
//! - **Locals, not an array.** The 25 lanes are 25 local variables and each round is expanded
//!   by the `round!` macro, so every lane is a name the register allocator sees rather than
//!   an indexed memory slot.
//! - **Four rounds per loop iteration, not 24.** All 24 rounds unrolled is about 5,000
//!   instructions (20 KiB); on the 2.6 GHz AMD EPYC (Zen 4) this was tuned on, its speed swung
//!   from one build or run to the next, as the body did or did not stay in the
//!   decoded-instruction cache, and was slower on average. A two-round body measured 259 ns
//!   for the full permutation, against 328 ns for the `keccak` crate; four rounds a little
//!   less again.
//! - **Combined steps.** One round applies, for each output plane, θ, ρ and π to the five lanes
//!   χ needs and writes χ∘ι straight into the other set of locals, folding each new lane into
//!   the next round's θ column parities as it goes; rounds alternate between the two sets
//!   (`a → e`, `e → a`, one loop iteration), so nothing is copied.
//! - **Lane complementing.** χ computes `b0 ^ (!b1 & b2)` for every lane: 25 NOTs a round on a
//!   CPU without an and-not instruction (baseline x86-64 has none). Keeping six lanes (1, 2, 8,
//!   12, 17, 20) in complemented form turns, by De Morgan, most of those into plain `&`/`|`,
//!   leaving 5 NOTs a round (the "lane complementing transform" of the Keccak team's
//!   implementation overview, §2.2). The set is stable: one round maps complemented inputs to
//!   complemented outputs at the same positions, so the complement is applied once on input
//!   and once on output. The per-lane formulas below were derived by checking all eight
//!   input-bit cases of each χ lane against its complement flags, and the test
//!   `keccak_sha3_256_48_lane0_matches_sha3_crate` (in `address.rs`) checks the result
//!   against the `sha3` crate for arbitrary messages.
//!
//! Only the checksum needs Keccak here, so there is one function, `sha3_256_48_lane0`, the
//! permutation specialised to it: a 48-byte message is one
//! SHA3-256 block whose lanes 7–15 and 17–24 are zero, which the compiler folds into the first
//! round, and only the first output lane is wanted, so the last round computes χ for lane 0
//! alone.

/// Number of rounds of Keccak-f\[1600\] (FIPS 202 §3.4: 12 + 2ℓ with ℓ = 6).
const ROUNDS: usize = 24;

/// The round constants of ι, computed from FIPS 202 Algorithm 5 (`rc`, an LFSR over GF(2) with
/// polynomial x⁸ + x⁶ + x⁵ + x⁴ + 1) and Algorithm 6: bit `2^j − 1` of `RC[i]` is
/// `rc(j + 7i)`.
const RC: [u64; ROUNDS] = {
    let mut rc = [0u64; ROUNDS];
    // LFSR state R (FIPS 202 Algorithm 5), stepped once per output bit: rc(t) is its low bit
    // after t steps.
    let mut r: u16 = 1;
    let mut t = 0;
    while t < 7 * ROUNDS {
        let (round, j) = (t / 7, t % 7);
        if r & 1 != 0 {
            rc[round] |= 1 << ((1 << j) - 1);
        }
        r <<= 1;
        if r & 0x100 != 0 {
            r ^= 0x171;
        }
        t += 1;
    }
    rc
};

/// One round, θ ρ π χ ι, from the 25 lanes named in the first list into those named in the
/// second, both in lane-complemented form (lane index `x + 5y`; list position = index). The
/// third list names θ's five column parities: on entry those of the input lanes, on exit those
/// of the output lanes, accumulated as each output lane is produced (while it is still in a
/// register) instead of being recomputed from all 25 lanes at the start of the next round.
///
/// θ: `c[x]` is column x's parity, `d[x] = c[x−1] ^ rot(c[x+1], 1)`. ρ∘π: output lane
/// `(X, Y)` of π is input lane `(x, y)` with `X = y`, `Y = 2x + 3y`, rotated by ρ's offset for
/// `(x, y)`. χ: `out[X] = b[X] ^ (!b[X+1] & b[X+2])` within a plane, rewritten per lane for
/// the complemented representation (hence the mix of `|`, `&` and the few NOTs).
/// ι XORs `$rc` into lane 0.
macro_rules! round {
    ([$a00:ident, $a01:ident, $a02:ident, $a03:ident, $a04:ident, $a05:ident, $a06:ident, $a07:ident, $a08:ident, $a09:ident, $a10:ident, $a11:ident, $a12:ident, $a13:ident, $a14:ident, $a15:ident, $a16:ident, $a17:ident, $a18:ident, $a19:ident, $a20:ident, $a21:ident, $a22:ident, $a23:ident, $a24:ident] => [$e00:ident, $e01:ident, $e02:ident, $e03:ident, $e04:ident, $e05:ident, $e06:ident, $e07:ident, $e08:ident, $e09:ident, $e10:ident, $e11:ident, $e12:ident, $e13:ident, $e14:ident, $e15:ident, $e16:ident, $e17:ident, $e18:ident, $e19:ident, $e20:ident, $e21:ident, $e22:ident, $e23:ident, $e24:ident], [$c0:ident, $c1:ident, $c2:ident, $c3:ident, $c4:ident], $rc:expr) => {
        let d0 = $c4 ^ $c1.rotate_left(1);
        let d1 = $c0 ^ $c2.rotate_left(1);
        let d2 = $c1 ^ $c3.rotate_left(1);
        let d3 = $c2 ^ $c4.rotate_left(1);
        let d4 = $c3 ^ $c0.rotate_left(1);
        let b0 = $a00 ^ d0;
        let b1 = ($a06 ^ d1).rotate_left(44);
        let b2 = ($a12 ^ d2).rotate_left(43);
        let b3 = ($a18 ^ d3).rotate_left(21);
        let b4 = ($a24 ^ d4).rotate_left(14);
        let n2 = !b2;
        $e00 = b0 ^ (b1 | b2) ^ $rc;
        $c0 = $e00;
        $e01 = b1 ^ (n2 | b3);
        $c1 = $e01;
        $e02 = b2 ^ (b3 & b4);
        $c2 = $e02;
        $e03 = b3 ^ (b4 | b0);
        $c3 = $e03;
        $e04 = b4 ^ (b0 & b1);
        $c4 = $e04;
        let b0 = ($a03 ^ d3).rotate_left(28);
        let b1 = ($a09 ^ d4).rotate_left(20);
        let b2 = ($a10 ^ d0).rotate_left(3);
        let b3 = ($a16 ^ d1).rotate_left(45);
        let b4 = ($a22 ^ d2).rotate_left(61);
        let n4 = !b4;
        $e05 = b0 ^ (b1 | b2);
        $c0 ^= $e05;
        $e06 = b1 ^ (b2 & b3);
        $c1 ^= $e06;
        $e07 = b2 ^ (b3 | n4);
        $c2 ^= $e07;
        $e08 = b3 ^ (b4 | b0);
        $c3 ^= $e08;
        $e09 = b4 ^ (b0 & b1);
        $c4 ^= $e09;
        let b0 = ($a01 ^ d1).rotate_left(1);
        let b1 = ($a07 ^ d2).rotate_left(6);
        let b2 = ($a13 ^ d3).rotate_left(25);
        let b3 = ($a19 ^ d4).rotate_left(8);
        let b4 = ($a20 ^ d0).rotate_left(18);
        let n3 = !b3;
        $e10 = b0 ^ (b1 | b2);
        $c0 ^= $e10;
        $e11 = b1 ^ (b2 & b3);
        $c1 ^= $e11;
        $e12 = b2 ^ (n3 & b4);
        $c2 ^= $e12;
        $e13 = n3 ^ (b4 | b0);
        $c3 ^= $e13;
        $e14 = b4 ^ (b0 & b1);
        $c4 ^= $e14;
        let b0 = ($a04 ^ d4).rotate_left(27);
        let b1 = ($a05 ^ d0).rotate_left(36);
        let b2 = ($a11 ^ d1).rotate_left(10);
        let b3 = ($a17 ^ d2).rotate_left(15);
        let b4 = ($a23 ^ d3).rotate_left(56);
        let n3 = !b3;
        $e15 = b0 ^ (b1 & b2);
        $c0 ^= $e15;
        $e16 = b1 ^ (b2 | b3);
        $c1 ^= $e16;
        $e17 = b2 ^ (n3 | b4);
        $c2 ^= $e17;
        $e18 = n3 ^ (b4 & b0);
        $c3 ^= $e18;
        $e19 = b4 ^ (b0 | b1);
        $c4 ^= $e19;
        let b0 = ($a02 ^ d2).rotate_left(62);
        let b1 = ($a08 ^ d3).rotate_left(55);
        let b2 = ($a14 ^ d4).rotate_left(39);
        let b3 = ($a15 ^ d0).rotate_left(41);
        let b4 = ($a21 ^ d1).rotate_left(2);
        let n1 = !b1;
        $e20 = b0 ^ (n1 & b2);
        $c0 ^= $e20;
        $e21 = n1 ^ (b2 | b3);
        $c1 ^= $e21;
        $e22 = b2 ^ (b3 & b4);
        $c2 ^= $e22;
        $e23 = b3 ^ (b4 | b0);
        $c3 ^= $e23;
        $e24 = b4 ^ (b0 & b1);
        $c4 ^= $e24;
    };
}

/// The first output lane of SHA3-256 (FIPS 202 §6.1) of a 48-byte message given as six
/// little-endian lanes (message bytes `8i..8i+8` are lane `i`): the lane's low two bytes are the
/// first two bytes of the digest.
///
/// 48 bytes is less than the 136-byte rate, so the padded message is one block: message lanes
/// 0–5, the SHA3 suffix and first pad bit (`0x06`, FIPS 202 §B.2) in the low byte of lane 6,
/// the last pad bit (`0x80`) in the top byte of lane 16 (byte 135), and zeros elsewhere. The
/// zero lanes are constants here, so the compiler folds them into the first round; the last
/// round computes only lane 0, which needs χ's inputs `b0`, `b1`, `b2` of plane 0 (input lanes
/// 0, 6 and 12 after θ and ρ) and θ's `d0`, `d1`, `d2`. Taking lanes rather than bytes lets
/// the caller assemble them in registers.
pub(crate) fn sha3_256_48_lane0(msg: &[u64; 6]) -> u64 {
    // Lane-complemented initial state: lanes 1, 2, 8, 12, 17 and 20 start inverted (1, 2 are message
    // lanes; 8, 12, 17, 20 are zero, so all ones).
    let (mut a00, mut a01, mut a02, mut a03, mut a04, mut a05) =
        (msg[0], !msg[1], !msg[2], msg[3], msg[4], msg[5]);
    let (mut a06, mut a07, mut a08, mut a09) = (0x06u64, 0u64, !0u64, 0u64);
    let (mut a10, mut a11, mut a12, mut a13, mut a14) = (0u64, 0u64, !0u64, 0u64, 0u64);
    let (mut a15, mut a16, mut a17, mut a18, mut a19) = (0u64, 0x80u64 << 56, !0u64, 0u64, 0u64);
    let (mut a20, mut a21, mut a22, mut a23, mut a24) = (!0u64, 0u64, 0u64, 0u64, 0u64);
    let mut c0 = a00 ^ a05 ^ a10 ^ a15 ^ a20;
    let mut c1 = a01 ^ a06 ^ a11 ^ a16 ^ a21;
    let mut c2 = a02 ^ a07 ^ a12 ^ a17 ^ a22;
    let mut c3 = a03 ^ a08 ^ a13 ^ a18 ^ a23;
    let mut c4 = a04 ^ a09 ^ a14 ^ a19 ^ a24;
    let mut e00: u64;
    let mut e01: u64;
    let mut e02: u64;
    let mut e03: u64;
    let mut e04: u64;
    let mut e05: u64;
    let mut e06: u64;
    let mut e07: u64;
    let mut e08: u64;
    let mut e09: u64;
    let mut e10: u64;
    let mut e11: u64;
    let mut e12: u64;
    let mut e13: u64;
    let mut e14: u64;
    let mut e15: u64;
    let mut e16: u64;
    let mut e17: u64;
    let mut e18: u64;
    let mut e19: u64;
    let mut e20: u64;
    let mut e21: u64;
    let mut e22: u64;
    let mut e23: u64;
    let mut e24: u64;
    macro_rules! a_to_e {
        ($rc:expr) => {
            round!([a00, a01, a02, a03, a04, a05, a06, a07, a08, a09, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21, a22, a23, a24] => [e00, e01, e02, e03, e04, e05, e06, e07, e08, e09, e10, e11, e12, e13, e14, e15, e16, e17, e18, e19, e20, e21, e22, e23, e24], [c0, c1, c2, c3, c4], $rc)
        };
    }
    macro_rules! e_to_a {
        ($rc:expr) => {
            round!([e00, e01, e02, e03, e04, e05, e06, e07, e08, e09, e10, e11, e12, e13, e14, e15, e16, e17, e18, e19, e20, e21, e22, e23, e24] => [a00, a01, a02, a03, a04, a05, a06, a07, a08, a09, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21, a22, a23, a24], [c0, c1, c2, c3, c4], $rc)
        };
    }
    a_to_e!(RC[0]);
    // Rounds 1..=20 four at a time, then 21 and 22: four rounds per loop body measured a
    // little faster here than two (loop overhead) and than a full unroll (whose 22 rounds of
    // code no longer fit the decoded-instruction cache).
    for rc in RC[1..ROUNDS - 3].chunks_exact(4) {
        e_to_a!(rc[0]);
        a_to_e!(rc[1]);
        e_to_a!(rc[2]);
        a_to_e!(rc[3]);
    }
    e_to_a!(RC[ROUNDS - 3]);
    a_to_e!(RC[ROUNDS - 2]);
    // Round 23, lane 0 only: θ, then ρ∘π for the plane-0 lanes b0, b1, b2, then χ and ι.
    // Lane 0 is not complemented, and this is the complemented-form formula for it.
    let b0 = e00 ^ c4 ^ c1.rotate_left(1);
    let b1 = (e06 ^ c0 ^ c2.rotate_left(1)).rotate_left(44);
    let b2 = (e12 ^ c1 ^ c3.rotate_left(1)).rotate_left(43);
    b0 ^ (b1 | b2) ^ RC[ROUNDS - 1]
}
