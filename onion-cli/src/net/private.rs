//! Private directories and files (the data directory, `--key-dir`, a relay's keys), by C
//! tor's `check_private_dir` rules: see [`onion_io::private`], shared with onion-tokio.

use std::io;
use std::path::Path;

pub use onion_io::private::{read_secret, write_atomic, DirKind};

/// [`onion_io::private::check_private_dir`], with a warning on stderr when a data directory
/// that others could read was made private.
pub fn check_private_dir(dir: &Path, kind: DirKind) -> io::Result<()> {
    if let Some(fixed) = onion_io::private::check_private_dir(dir, kind)? {
        eprintln!("onion: warning: {fixed}");
    }
    Ok(())
}
