//! Fuzz the streaming channel-cell decoder: arbitrary bytes, split into arbitrary chunks,
//! with a link version chosen by the first byte. Checks that no input panics, that
//! decoding is independent of how the stream is split, and that every decoded cell
//! re-encodes and decodes to the same cell.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onion_cell::codec::{decode_cell, encode_cell, CellDecoder, CellFormat};
use onion_cell::ChanCell;

fn decode_all(format: CellFormat, chunks: &[&[u8]]) -> (Vec<ChanCell<'static>>, usize) {
    let mut dec = CellDecoder::new(format);
    let mut out = Vec::new();
    let mut errors = 0;
    for c in chunks {
        dec.push(c);
        loop {
            match dec.next_cell() {
                Ok(Some(cell)) => out.push(cell.into_owned()),
                Ok(None) => break,
                Err(_) => errors += 1,
            }
        }
    }
    (out, errors)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = match sel % 6 {
        0 => CellFormat::UNNEGOTIATED,
        v => CellFormat::for_version(u16::from(v)).expect("nonzero version"),
    };
    let split = usize::from(sel >> 3).min(rest.len());
    let whole = decode_all(format, &[rest]);
    let (a, b) = rest.split_at(split);
    let parts = decode_all(format, &[a, b]);
    assert_eq!(whole, parts);
    for cell in &whole.0 {
        let mut buf = Vec::new();
        if encode_cell(format, cell, &mut buf).is_ok() {
            let (again, n) = decode_cell(format, &buf).expect("re-decode");
            assert_eq!(n, buf.len());
            assert_eq!(&again, cell);
        }
    }
});
