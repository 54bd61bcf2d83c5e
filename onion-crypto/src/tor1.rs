//! Relay-cell crypto "tor1" (tor-spec 5.5 "Routing relay cells", 6.1 "Relay cells").
//!
//! Each hop shares with the client two stream ciphers (forward `Kf`, backward `Kb`,
//! AES-128-CTR with a zero IV, the stream continuing across cells) and two running
//! digests (SHA-1 seeded with `Df`, `Db`). The relay header of a cell body is
//!
//! ```text
//! command(1) | recognized(2) | stream_id(2) | digest(4) | length(2) | data(498)
//! ```
//!
//! The sender of a cell for hop N sets `recognized = 0`, feeds the whole 509-byte body (with
//! the digest field zero) into hop N's running digest, writes the first 4 bytes of the
//! running digest into `digest`, then encrypts with hops N, N-1, ..., 1. A hop recognises a
//! cell when, after removing its layer, `recognized == 0` and the digest matches its own
//! running digest; otherwise the digest state is left untouched and the cell passes on.
//!
//! Everything here works in place on a `&mut [u8; 509]` and allocates nothing per cell.
//!
//! The code is generic over the stream cipher `C` and the digest `D`, so that the
//! onion-service "virtual hop" of rend-spec-v3 ("NTOR-WITH-EXTRA-DATA": AES-256-CTR and
//! SHA3-256, key material `Df(32) | Db(32) | Kf(32) | Kb(32)`) reuses it: see
//! [`HsClientHop`] and [`HsRelayCrypto`]. [`Tor1ClientHop`] and [`Tor1RelayCrypto`] are
//! the tor1 instances.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;

use aes::{Aes128, Aes128Enc, Aes256, Aes256Enc};
use cipher::consts::U16;
use cipher::typenum::Unsigned;
use cipher::{
    Block, BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, KeyInit, KeySizeUser, ParBlocks,
};
use digest::{Digest, Output};
use sha1::Sha1;
use sha3::Sha3_256;
use subtle::ConstantTimeEq;

use crate::error::Tor1Error;

/// Length of a relay cell body (the payload of a RELAY / RELAY_EARLY cell).
pub const CELL_BODY_LEN: usize = 509;
/// A relay cell body, encrypted or not.
pub type CellBody = [u8; CELL_BODY_LEN];
/// Key material needed by one tor1 hop: `Df(20) | Db(20) | Kf(16) | Kb(16)`.
pub const TOR1_KEY_LEN: usize = 72;
/// Key material needed by one onion-service virtual hop: `Df | Db | Kf | Kb`, 32 bytes each.
pub const HS_KEY_LEN: usize = 128;

/// Offset of the `recognized` field in the relay header.
const RECOGNIZED: core::ops::Range<usize> = 1..3;
/// Offset of the `digest` field in the relay header.
const DIGEST: core::ops::Range<usize> = 5..9;

/// AES-128 in counter mode with a 128-bit big-endian counter and any IV (general purpose;
/// the relay-cell layers use the smaller [`CellCtr`]).
pub type Aes128Ctr = ctr::Ctr128BE<Aes128>;
/// AES-256 in counter mode with any IV (ntor-v3 and onion-service message encryption).
pub type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// A relay-cell stream cipher: keyed once, then applied to whole 509-byte bodies, the
/// keystream continuing from one cell to the next (tor-spec 5.5 "Routing relay cells").
pub trait CellCipher {
    /// Key length in bytes.
    const KEY_LEN: usize;
    /// Key the cipher; `key` is exactly [`Self::KEY_LEN`] bytes (checked by the callers).
    fn from_key(key: &[u8]) -> Self;
    /// XOR the next [`CELL_BODY_LEN`] keystream bytes into `cell` (encrypt = decrypt).
    fn apply(&mut self, cell: &mut CellBody);
    /// Drop whatever can be recomputed from the key (an expanded key schedule), to save
    /// memory while the circuit is idle; the next [`CellCipher::apply`] rebuilds it. The
    /// keystream position is kept, so this never changes the output.
    fn compact(&mut self) {}
}

/// AES-CTR as tor uses it for relay cells (tor-spec 0.3: 128-bit big-endian counter, IV
/// zero), kept as small as possible because every hop of every circuit holds two.
///
/// Only the encrypting key schedule is kept, plus the number of keystream bytes used so
/// far; there is no buffered keystream block: the partial block a cell ends in is
/// recomputed by the next cell (one extra block encryption out of 33).
///
/// The expanded key schedule is boxed and can be dropped with [`CellCipher::compact`]
/// while the circuit is idle: the aes crate's runtime-dispatched schedule is 704 bytes for
/// AES-128 (the size of its software fallback, even when AES-NI is used), whereas the raw
/// key and the keystream position are 24. The next cell expands the key again (about
/// 50 ns), so an idle circuit costs little memory and a busy one pays nothing per cell.
/// The raw key and the schedule are zeroized on drop (aes `zeroize` feature for the
/// latter).
pub struct CellCtr<B: KeySizeUser> {
    key: cipher::Key<B>,
    cipher: Option<Box<B>>,
    /// Keystream bytes consumed: block index `offset / 16`, position `offset % 16`. A u64
    /// cannot wrap in practice (2^64 bytes on one circuit).
    offset: u64,
}

impl<B: KeySizeUser + Clone> Clone for CellCtr<B> {
    fn clone(&self) -> Self {
        CellCtr {
            key: self.key.clone(),
            cipher: self.cipher.clone(),
            offset: self.offset,
        }
    }
}

impl<B: KeySizeUser> Drop for CellCtr<B> {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.key.as_mut_slice());
    }
}

impl<B: KeySizeUser> CellCtr<B> {
    /// Whether the key schedule is currently expanded (the cipher was used since the last
    /// [`CellCipher::compact`]).
    pub fn is_expanded(&self) -> bool {
        self.cipher.is_some()
    }
}

/// One cell's worth of CTR keystream, run inside the block cipher's backend so that the
/// CPU-feature dispatch happens once per cell and the blocks go through the backend's
/// parallel (pipelined) path, as the ctr crate does.
struct CellKeystream<'a> {
    cell: &'a mut CellBody,
    /// Counter of the first block touched.
    ctr: u128,
    /// Keystream bytes of that first block already used by the previous cell.
    start: usize,
}

impl BlockSizeUser for CellKeystream<'_> {
    type BlockSize = U16;
}

/// XOR `ks` into `dst` (the shorter length).
#[inline(always)]
fn xor_into(dst: &mut [u8], ks: &[u8]) {
    for (d, k) in dst.iter_mut().zip(ks) {
        *d ^= *k;
    }
}

impl BlockClosure for CellKeystream<'_> {
    #[inline(always)]
    fn call<Bk: BlockBackend<BlockSize = U16>>(self, backend: &mut Bk) {
        let mut ctr = self.ctr;
        let mut next = || {
            let b = Block::<Bk>::from(ctr.to_be_bytes());
            // The counter cannot reach 2^128 (a u64 byte offset feeds it).
            ctr = ctr.wrapping_add(1);
            b
        };
        let (head, rest) = self.cell.split_at_mut((16 - self.start) % 16);
        if !head.is_empty() {
            let mut b = next();
            backend.proc_block_inplace(&mut b);
            xor_into(head, b.get(self.start..).unwrap_or_default());
        }
        let par_len = 16 * Bk::ParBlocksSize::USIZE;
        let mut pars = rest.chunks_exact_mut(par_len);
        for chunk in &mut pars {
            let mut blocks = ParBlocks::<Bk>::default();
            for b in blocks.iter_mut() {
                *b = next();
            }
            backend.proc_par_blocks_inplace(&mut blocks);
            for (d, k) in chunk.chunks_exact_mut(16).zip(blocks.iter()) {
                xor_into(d, k);
            }
        }
        // The tail (up to 8 blocks) also goes through the parallel path: a few unused
        // blocks cost less than the same blocks one at a time.
        let tail = pars.into_remainder();
        if !tail.is_empty() {
            let mut blocks = ParBlocks::<Bk>::default();
            for b in blocks.iter_mut() {
                *b = next();
            }
            backend.proc_par_blocks_inplace(&mut blocks);
            for (d, k) in tail.chunks_mut(16).zip(blocks.iter()) {
                xor_into(d, k);
            }
        }
    }
}

impl<B> CellCipher for CellCtr<B>
where
    B: BlockEncrypt + KeyInit + BlockSizeUser<BlockSize = U16>,
{
    const KEY_LEN: usize = <B as cipher::KeySizeUser>::KeySize::USIZE;

    fn from_key(key: &[u8]) -> Self {
        let key = cipher::Key::<B>::clone_from_slice(key);
        CellCtr {
            cipher: Some(Box::new(B::new(&key))),
            key,
            offset: 0,
        }
    }

    #[inline]
    fn apply(&mut self, cell: &mut CellBody) {
        let key = &self.key;
        let cipher = self.cipher.get_or_insert_with(|| Box::new(B::new(key)));
        cipher.encrypt_with_backend(CellKeystream {
            cell,
            ctr: u128::from(self.offset / 16),
            start: (self.offset % 16) as usize,
        });
        self.offset = self.offset.wrapping_add(CELL_BODY_LEN as u64);
    }

    fn compact(&mut self) {
        // Dropping the box zeroizes the schedule (aes `zeroize` feature).
        self.cipher = None;
    }
}

/// One direction of one hop: a stream cipher and a running digest.
///
/// The cipher keys are zeroized on drop (aes/ctr `zeroize` feature). The running digest
/// (seeded with a secret `Df`/`Db`) cannot be wiped through the RustCrypto hash API.
#[derive(Clone)]
pub struct CryptState<C, D: Digest> {
    cipher: C,
    digest: D,
    last: Output<D>,
}

impl<C, D> CryptState<C, D>
where
    C: CellCipher,
    D: Digest + Clone,
{
    /// Key the cipher with `key` (zero IV) and seed the digest with `digest_seed`.
    fn new(key: &[u8], digest_seed: &[u8]) -> Self {
        let cipher = C::from_key(key);
        let mut digest = D::new();
        digest.update(digest_seed);
        CryptState {
            cipher,
            digest,
            last: Output::<D>::default(),
        }
    }

    /// Apply the keystream (encrypt and decrypt are the same operation).
    #[inline]
    fn apply(&mut self, cell: &mut CellBody) {
        self.cipher.apply(cell);
    }

    /// See [`CellCipher::compact`].
    fn compact(&mut self) {
        self.cipher.compact();
    }

    /// Originate: zero `recognized` and the digest field, feed the body to the running
    /// digest and write the first 4 digest bytes.
    #[inline]
    fn set_digest(&mut self, cell: &mut CellBody) {
        cell[RECOGNIZED].fill(0);
        cell[DIGEST].fill(0);
        self.digest.update(&cell[..]);
        self.last = self.digest.clone().finalize();
        cell[DIGEST].copy_from_slice(&self.last[..4]);
    }

    /// Is this (already decrypted) cell for us? If so, advance the running digest; if not,
    /// leave it exactly as it was. The cell is left unchanged either way.
    #[inline]
    fn is_recognized(&mut self, cell: &mut CellBody) -> bool {
        if cell[RECOGNIZED] != [0, 0] {
            return false;
        }
        self.check_digest(cell)
    }

    #[inline(never)]
    fn check_digest(&mut self, cell: &mut CellBody) -> bool {
        let mut received = [0u8; 4];
        received.copy_from_slice(&cell[DIGEST]);
        cell[DIGEST].fill(0);
        // Keep the old state in case this cell is not ours (tor-spec 5.5.3: "the digest
        // state is not updated").
        let saved = self.digest.clone();
        self.digest.update(&cell[..]);
        let full = self.digest.clone().finalize();
        cell[DIGEST].copy_from_slice(&received);
        if bool::from(full[..4].ct_eq(&received)) {
            self.last = full;
            true
        } else {
            self.digest = saved;
            false
        }
    }
}

/// `(Df, Db, Kf, Kb)` borrowed from the key material.
type KeyParts<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);

fn split_keys<C: CellCipher, D: Digest>(keys: &[u8]) -> Result<KeyParts<'_>, Tor1Error> {
    let dl = <D as Digest>::output_size();
    let kl = C::KEY_LEN;
    let expected = 2 * dl + 2 * kl;
    if keys.len() != expected {
        return Err(Tor1Error::BadKeyLength {
            expected,
            got: keys.len(),
        });
    }
    let (df, rest) = keys.split_at(dl);
    let (db, rest) = rest.split_at(dl);
    let (kf, kb) = rest.split_at(kl);
    Ok((df, db, kf, kb))
}

/// The key material length a `(C, D)` hop needs: `2 * digest_len + 2 * key_len`.
pub fn key_len<C: CellCipher, D: Digest>() -> usize {
    2 * <D as Digest>::output_size() + 2 * C::KEY_LEN
}

/// The client's view of one hop: forward state (`Kf`, `Df`) for cells it sends, backward
/// state (`Kb`, `Db`) for cells it receives.
#[derive(Clone)]
pub struct ClientHop<C, D: Digest> {
    fwd: CryptState<C, D>,
    back: CryptState<C, D>,
}

impl<C, D: Digest> core::fmt::Debug for ClientHop<C, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClientHop(..)")
    }
}

impl<C, D> ClientHop<C, D>
where
    C: CellCipher,
    D: Digest + Clone,
{
    /// From `Df | Db | Kf | Kb` (72 bytes for tor1, 128 for the onion-service hop), as
    /// produced by [`crate::kdf::KeyGenerator::expand`].
    pub fn from_key_material(keys: &[u8]) -> Result<Self, Tor1Error> {
        let (df, db, kf, kb) = split_keys::<C, D>(keys)?;
        Ok(ClientHop {
            fwd: CryptState::new(kf, df),
            back: CryptState::new(kb, db),
        })
    }

    /// The same key material with the roles swapped: for the party that plays the relay's
    /// role but wants a client-style layer, i.e. the onion service end of the rend-spec-v3
    /// virtual hop (it sends with `Kb`/`Db` and receives with `Kf`/`Df`).
    pub fn from_key_material_reversed(keys: &[u8]) -> Result<Self, Tor1Error> {
        let (df, db, kf, kb) = split_keys::<C, D>(keys)?;
        Ok(ClientHop {
            fwd: CryptState::new(kb, db),
            back: CryptState::new(kf, df),
        })
    }
}

/// A hop as the client's layered circuit crypto sees it, object-safe so that one circuit
/// can mix tor1 hops with an onion-service virtual hop.
pub trait ClientLayer: Send {
    /// Set this hop's digest on a cell addressed to it, then add this hop's layer.
    fn originate(&mut self, cell: &mut CellBody);
    /// Add this hop's layer to a cell addressed to a later hop.
    fn encrypt(&mut self, cell: &mut CellBody);
    /// Remove this hop's layer; `true` if the cell was sent by this hop (recognised).
    fn decrypt(&mut self, cell: &mut CellBody) -> bool;
    /// Full running digest after the last cell sent to this hop (authenticated SENDME v1).
    fn last_sent_digest(&self) -> &[u8];
    /// Full running digest after the last cell received from this hop.
    fn last_received_digest(&self) -> &[u8];
    /// Free the memory that the next cell can rebuild (expanded key schedules) while the
    /// circuit is idle; see [`CellCipher::compact`]. Never changes any output.
    fn compact(&mut self) {}
}

impl<C, D> ClientLayer for ClientHop<C, D>
where
    C: CellCipher + Send,
    D: Digest + Clone + Send,
{
    #[inline]
    fn originate(&mut self, cell: &mut CellBody) {
        self.fwd.set_digest(cell);
        self.fwd.apply(cell);
    }
    #[inline]
    fn encrypt(&mut self, cell: &mut CellBody) {
        self.fwd.apply(cell);
    }
    #[inline]
    fn decrypt(&mut self, cell: &mut CellBody) -> bool {
        self.back.apply(cell);
        self.back.is_recognized(cell)
    }
    fn last_sent_digest(&self) -> &[u8] {
        &self.fwd.last
    }
    fn last_received_digest(&self) -> &[u8] {
        &self.back.last
    }
    fn compact(&mut self) {
        self.fwd.compact();
        self.back.compact();
    }
}

/// A client's layered crypto for a whole circuit: hop 0 is the guard.
#[derive(Default)]
pub struct ClientCircuitCrypto {
    hops: Vec<Box<dyn ClientLayer>>,
}

impl core::fmt::Debug for ClientCircuitCrypto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ClientCircuitCrypto({} hops)", self.hops.len())
    }
}

impl ClientCircuitCrypto {
    /// An empty circuit.
    pub fn new() -> Self {
        Self::default()
    }
    /// Append a hop (after its CREATED2/EXTENDED2 completes).
    pub fn add_hop(&mut self, hop: impl ClientLayer + 'static) {
        self.hops.push(Box::new(hop));
    }
    /// Append an already boxed hop.
    pub fn add_boxed_hop(&mut self, hop: Box<dyn ClientLayer>) {
        self.hops.push(hop);
    }
    /// Number of hops.
    pub fn n_hops(&self) -> usize {
        self.hops.len()
    }
    /// Drop hops from `n` on (after TRUNCATED).
    pub fn truncate(&mut self, n: usize) {
        self.hops.truncate(n);
    }
    /// Free every hop's expanded key schedules while the circuit is idle
    /// ([`ClientLayer::compact`]); the next cell through a hop rebuilds its own.
    pub fn compact(&mut self) {
        for h in &mut self.hops {
            h.compact();
        }
        self.hops.shrink_to_fit();
    }

    /// Encrypt a relay cell body for hop `hop` (0-based): set the digest with that hop's
    /// forward state, then apply the layers `hop, hop-1, ..., 0` (tor-spec 5.5.2.1).
    /// `recognized` and `digest` are overwritten here; the rest of the header and the data
    /// are the caller's.
    pub fn encrypt_outbound(&mut self, cell: &mut CellBody, hop: usize) -> Result<(), Tor1Error> {
        let n = self.hops.len();
        let Some((target, inner)) = self.hops.get_mut(..=hop).and_then(|h| h.split_last_mut())
        else {
            return Err(Tor1Error::NoSuchHop { hop, hops: n });
        };
        target.originate(cell);
        for h in inner.iter_mut().rev() {
            h.encrypt(cell);
        }
        Ok(())
    }

    /// Decrypt an inbound relay cell body layer by layer, starting at the guard, and return
    /// the index of the hop that recognises it (tor-spec 5.5.3). The body is left in
    /// plaintext. [`Tor1Error::NotRecognized`] means the circuit must be torn down.
    pub fn decrypt_inbound(&mut self, cell: &mut CellBody) -> Result<usize, Tor1Error> {
        for (i, h) in self.hops.iter_mut().enumerate() {
            if h.decrypt(cell) {
                return Ok(i);
            }
        }
        Err(Tor1Error::NotRecognized)
    }

    /// The running forward digest of hop `hop` after the last cell sent to it.
    pub fn last_sent_digest(&self, hop: usize) -> Option<&[u8]> {
        self.hops.get(hop).map(|h| h.last_sent_digest())
    }
    /// The running backward digest of hop `hop` after the last cell it sent us.
    pub fn last_received_digest(&self, hop: usize) -> Option<&[u8]> {
        self.hops.get(hop).map(|h| h.last_received_digest())
    }
}

/// A relay's crypto for one circuit: it removes its layer from cells going away from the
/// client ("forward"/outbound) and adds it to cells going toward the client.
#[derive(Clone)]
pub struct RelayCrypto<C, D: Digest> {
    fwd: CryptState<C, D>,
    back: CryptState<C, D>,
    _p: PhantomData<(C, D)>,
}

impl<C, D: Digest> core::fmt::Debug for RelayCrypto<C, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RelayCrypto(..)")
    }
}

impl<C, D> RelayCrypto<C, D>
where
    C: CellCipher,
    D: Digest + Clone,
{
    /// From `Df | Db | Kf | Kb`, the same key material the client derived.
    pub fn from_key_material(keys: &[u8]) -> Result<Self, Tor1Error> {
        let (df, db, kf, kb) = split_keys::<C, D>(keys)?;
        Ok(RelayCrypto {
            fwd: CryptState::new(kf, df),
            back: CryptState::new(kb, db),
            _p: PhantomData,
        })
    }

    /// Remove this relay's layer from a cell coming from the client side. `true` if the
    /// cell is addressed to this relay (recognised, digest advanced); `false` if it must be
    /// forwarded to the next hop (digest untouched).
    #[inline]
    pub fn decrypt_outbound(&mut self, cell: &mut CellBody) -> bool {
        self.fwd.apply(cell);
        self.fwd.is_recognized(cell)
    }

    /// Add this relay's layer to a cell coming from further along the circuit, on its way
    /// to the client.
    #[inline]
    pub fn encrypt_inbound(&mut self, cell: &mut CellBody) {
        self.back.apply(cell);
    }

    /// Originate a cell toward the client: set the digest with the backward running digest
    /// and encrypt (`recognized` and `digest` are overwritten here).
    #[inline]
    pub fn originate_inbound(&mut self, cell: &mut CellBody) {
        self.back.set_digest(cell);
        self.back.apply(cell);
    }

    /// Running forward digest after the last cell recognised here (SENDME v1 check).
    pub fn last_received_digest(&self) -> &[u8] {
        &self.fwd.last
    }
    /// Running backward digest after the last cell this relay originated.
    pub fn last_sent_digest(&self) -> &[u8] {
        &self.back.last
    }

    /// Free the expanded key schedules while the circuit is idle ([`CellCipher::compact`]);
    /// the next cell rebuilds them.
    pub fn compact(&mut self) {
        self.fwd.compact();
        self.back.compact();
    }
}

/// A tor1 hop, client side (AES-128-CTR + SHA-1).
pub type Tor1ClientHop = ClientHop<CellCtr<Aes128Enc>, Sha1>;
/// tor1, relay side.
pub type Tor1RelayCrypto = RelayCrypto<CellCtr<Aes128Enc>, Sha1>;
/// The onion-service virtual hop, client side (AES-256-CTR + SHA3-256, rend-spec-v3).
pub type HsClientHop = ClientHop<CellCtr<Aes256Enc>, Sha3_256>;
/// The onion-service virtual hop, relay-role side.
pub type HsRelayCrypto = RelayCrypto<CellCtr<Aes256Enc>, Sha3_256>;

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{KeyIvInit, StreamCipher};
    use core::mem::size_of;

    /// [`CellCtr`] is exactly the ctr crate's AES-CTR (IV zero) over consecutive cells.
    #[test]
    fn cell_ctr_matches_ctr_crate() {
        let key = [7u8; 16];
        let mut reference = Aes128Ctr::new(&key.into(), &[0u8; 16].into());
        let mut ours = CellCtr::<Aes128Enc>::from_key(&key);
        for i in 0..40u8 {
            let mut a = [i; CELL_BODY_LEN];
            let mut b = a;
            reference.apply_keystream(&mut a);
            ours.apply(&mut b);
            assert_eq!(a, b, "cell {i}");
        }
        let key = [9u8; 32];
        let mut reference = Aes256Ctr::new(&key.into(), &[0u8; 16].into());
        let mut ours = CellCtr::<Aes256Enc>::from_key(&key);
        for i in 0..20u8 {
            let mut a = [i.wrapping_mul(31); CELL_BODY_LEN];
            let mut b = a;
            reference.apply_keystream(&mut a);
            ours.apply(&mut b);
            assert_eq!(a, b, "cell {i}");
        }
    }

    /// Compacting (dropping the expanded key schedule) between cells never changes the
    /// keystream, whatever the position within a block.
    #[test]
    fn compact_keeps_the_keystream() {
        let key = [5u8; 16];
        let mut reference = Aes128Ctr::new(&key.into(), &[0u8; 16].into());
        let mut ours = CellCtr::<Aes128Enc>::from_key(&key);
        for i in 0..40u8 {
            if i % 3 == 1 {
                ours.compact();
                assert!(!ours.is_expanded());
            }
            let mut a = [i; CELL_BODY_LEN];
            let mut b = a;
            reference.apply_keystream(&mut a);
            ours.apply(&mut b);
            assert!(ours.is_expanded());
            assert_eq!(a, b, "cell {i}");
        }
    }

    /// Per-hop state sizes (an idle circuit's heap is mostly these). The AES key
    /// schedule is the aes crate's runtime-dispatched encrypt-only one, whose size is that
    /// of its software (fixsliced) fallback: 704 bytes for AES-128 on 64-bit targets. It is
    /// boxed, so a hop's own size is what it keeps while compacted (raw keys, positions,
    /// SHA-1 states and last digests).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn state_sizes_do_not_grow() {
        eprintln!(
            "CellCtr {} (+ {} boxed while expanded) CryptState {} Tor1ClientHop {} HsClientHop {}",
            size_of::<CellCtr<Aes128Enc>>(),
            size_of::<Aes128Enc>(),
            size_of::<CryptState<CellCtr<Aes128Enc>, Sha1>>(),
            size_of::<Tor1ClientHop>(),
            size_of::<HsClientHop>()
        );
        assert!(size_of::<CellCtr<Aes128Enc>>() <= 32);
        assert!(size_of::<Aes128Enc>() <= 704);
        assert!(size_of::<CryptState<CellCtr<Aes128Enc>, Sha1>>() <= 168);
        assert!(
            size_of::<Tor1ClientHop>() <= 336,
            "{}",
            size_of::<Tor1ClientHop>()
        );
        assert!(size_of::<Tor1RelayCrypto>() <= 336);
        assert!(
            size_of::<HsClientHop>() <= 2720,
            "{}",
            size_of::<HsClientHop>()
        );
    }
}
