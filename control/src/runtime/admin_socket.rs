//! The admin socket protocol: one JSON request line, one JSON response line, then close.
//!
//! Request: `{"args": ["describe-client-vpn-endpoints", "--output", "table"]}` (the words after
//! `sluice`, without `--config`: the daemon always uses its own file). Response:
//! `{"exit": 0, "stdout": "...", "stderr": ""}`. Requests are bounded in size; a peer that is
//! not root (or the daemon's own user) is refused before it can send anything.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A request to the daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The verb and its flags, as typed after `sluice`.
    pub args: Vec<String>,
}

/// The daemon's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// The exit status the CLI should end with.
    pub exit: i32,
    /// What the CLI should print on stdout.
    pub stdout: String,
    /// What the CLI should print on stderr.
    pub stderr: String,
}

/// Sends `args` to the daemon listening at `socket` and waits for its answer.
///
/// # Errors
/// Connection refused or missing socket (no daemon), or a broken exchange.
pub fn call(socket: &Path, args: &[String]) -> io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(&Request {
        args: args.to_vec(),
    })
    .map_err(io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer from the daemon: {e}"),
        )
    })
}
