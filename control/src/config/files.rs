//! Opening the files the configuration names (certificates, keys, CRLs, the users file, the
//! connection log and the audit trail) and those an admin verb is given: only regular files,
//! and no more read than a bound. The configuration file itself, named on the command line,
//! may be a pipe (`--config <(...)`), but it too is read no further than a bound.
//!
//! A FIFO opened for reading waits for a writer, for writing for a reader, and the control
//! thread with it (at start, at a reload, in a verb), for good; a device such as `/dev/zero` is
//! read until the memory runs out, as is a sparse file of some GiB; a log that is a device
//! (`/dev/null`) would be rotated, renamed away. Each is refused at once here with an error
//! that says why.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest certificate, key or CA chain file read: a chain of a few certificates is some
/// KiB.
pub const PKI_LIMIT: u64 = 1 << 20;
/// The largest CRL file read: a CRL of a million serial numbers is some tens of MiB.
pub const CRL_LIMIT: u64 = 64 << 20;
/// The largest users file read: a hundred thousand users with their hashes and TOTP secrets
/// are some tens of MiB.
pub const USERS_LIMIT: u64 = 64 << 20;

/// The largest configuration file read: one with thousands of endpoints, rules and routes is a
/// few MiB. Anything larger is not a configuration (a device such as `/dev/zero`, a runaway
/// generator), and reading it whole would take the memory first.
pub const CONFIG_LIMIT: u64 = 16 << 20;

/// Opens `path` for reading without waiting (O_NONBLOCK, which reads of a regular file do not
/// heed) and returns it with its metadata (of the file opened, not of whatever the name points
/// to a moment later).
///
/// # Errors
/// The open fails, or `path` names something other than a regular file (a FIFO, a device, a
/// directory): "not a regular file". The message does not name the file: callers do.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    Ok((file, meta))
}

/// Reads the regular file at `path` whole, if it holds at most `limit` bytes.
///
/// # Errors
/// As `open_regular`; a file larger than `limit`: "larger than N bytes (the limit)". The message
/// does not name the file: callers do.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let (file, meta) = open_regular(path)?;
    read_opened(file, &meta, limit)
}

/// Reads `file` (opened by `open_regular`, `meta` its metadata) whole, if it holds at most
/// `limit` bytes.
///
/// # Errors
/// As `read_regular`.
pub fn read_opened(file: File, meta: &Metadata, limit: u64) -> Result<Vec<u8>, String> {
    let too_large = || too_large(limit);
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The size may have grown since: never read more than the limit.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// The error of the readers here for a file larger than `limit` bytes.
pub fn too_large(limit: u64) -> String {
    format!("larger than {limit} bytes (the limit)")
}

/// Reads the file at `path`, whatever it is, whole if it holds at most `limit` bytes, as UTF-8
/// text: for a file named on the command line, which may be a pipe (`--config <(...)`: the
/// open waits for a writer as the user meant it to). A device or a pipe is read no further than
/// the limit; a larger regular file is refused without reading.
///
/// # Errors
/// The open or a read fails; more than `limit` bytes: `too_large`; text that is not UTF-8. The
/// message does not name the file: callers do.
pub fn read_named_text(path: &Path, limit: u64) -> Result<String, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    String::from_utf8(read_opened(file, &meta, limit)?)
        .map_err(|_| "stream did not contain valid UTF-8".to_owned())
}

/// `read_regular`, as UTF-8 text.
///
/// # Errors
/// As `read_regular`; text that is not UTF-8.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| "stream did not contain valid UTF-8".to_owned())
}

/// Opens the regular file at `path` to append to it, creating it with `mode` if it is not
/// there, without waiting (a FIFO without a reader would hold the caller).
///
/// # Errors
/// The open fails; `path` names something other than a regular file: an error whose text is
/// "not a regular file". The message does not name the file: callers do.
pub fn open_append_regular(path: &Path, mode: u32) -> io::Result<File> {
    let not_regular = || io::Error::other("not a regular file");
    let file = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        // ENXIO: a FIFO without a reader.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
            return Err(not_regular())
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;

    /// A FIFO made in `dir`.
    pub(crate) fn fifo_in(dir: &Path) -> PathBuf {
        let fifo = dir.join("a.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        fifo
    }

    /// A sparse file of 2 GiB made in `dir`.
    pub(crate) fn huge_in(dir: &Path) -> PathBuf {
        let p = dir.join("huge.pem");
        File::create(&p)
            .expect("create")
            .set_len(2 << 30)
            .expect("set_len");
        p
    }

    /// What `f` returns, run on a thread given 10 s: a regression (waiting on a FIFO, reading
    /// without end) fails instead of hanging.
    pub(crate) fn within<T: Send + 'static>(
        what: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what} did not end"))
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_or_too_large() {
        let d = tempfile::tempdir().expect("temporary directory");
        let fifo = fifo_in(d.path());
        let huge = huge_in(d.path());
        for (path, says) in [
            (fifo.clone(), "not a regular file".to_owned()),
            (PathBuf::from("/dev/zero"), "not a regular file".to_owned()),
            (d.path().to_path_buf(), "not a regular file".to_owned()),
            (huge, format!("larger than {PKI_LIMIT} bytes (the limit)")),
        ] {
            let p = path.clone();
            let e = within(&format!("reading {}", path.display()), move || {
                read_regular(&p, PKI_LIMIT)
            })
            .expect_err("refused");
            assert_eq!(e, says, "{}", path.display());
        }
        for path in [fifo, PathBuf::from("/dev/null")] {
            let p = path.clone();
            let e = within(&format!("opening {}", path.display()), move || {
                open_append_regular(&p, 0o600)
            })
            .expect_err("refused");
            assert_eq!(e.to_string(), "not a regular file", "{}", path.display());
        }
        let log = d.path().join("a.log");
        std::fs::write(&log, "kept\n").expect("write");
        std::io::Write::write_all(
            &mut open_append_regular(&log, 0o600).expect("open"),
            b"more\n",
        )
        .expect("append");
        assert_eq!(std::fs::read_to_string(&log).expect("read"), "kept\nmore\n");
        let small = d.path().join("small.pem");
        std::fs::write(&small, "x".repeat(10)).expect("write");
        assert_eq!(read_regular(&small, 10).expect("read").len(), 10);
        assert_eq!(
            read_regular(&small, 9).expect_err("too large"),
            "larger than 9 bytes (the limit)"
        );
    }
}
