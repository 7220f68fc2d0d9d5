//! The admin socket protocol: one JSON request line, one JSON response line, then close. The
//! caller may shut down its writing side once its line is sent (`socat`, `nc -N`): it is still
//! answered.
//!
//! Request: `{"args": ["describe-client-vpn-endpoints", "--output", "table"], "config":
//! "/etc/sluice/sluice.toml", "cwd": "/root"}` (the words after `sluice`, without `--config`;
//! the caller's configuration file, canonical; the caller's working directory, against which
//! relative paths in the words are resolved, as offline). The daemon serves a request only for its own file (or one
//! without `config`: `sluice top`'s, and the probe of `sluice run`); for another file it answers
//! `not_its_file`, and the CLI works on that file itself. Response:
//! `{"exit": 0, "stdout": "...", "stderr": ""}`. Requests are bounded in size, and peers in
//! time (a few seconds to send the request, and to take each part of the answer; half a
//! minute, the verb's own time aside, for the whole exchange) and in number
//! (the rest wait to be accepted); a peer that is not root (or the daemon's own user) is refused
//! before it can send anything. Fields added later are optional both ways, so a request or
//! answer without them means what it did before.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
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
    /// The caller's configuration file, absolute (canonical where it exists). The daemon serves
    /// the request only when this is its own file; absent, its own file is meant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// The caller's working directory (absolute): relative paths in `args` are the caller's, and
    /// are resolved against it. Absent, relative paths are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
}

impl Request {
    /// A request for the verb and flags `args`, on the daemon's own file.
    pub fn own_file(args: Vec<String>) -> Self {
        Self {
            args,
            config: None,
            cwd: None,
        }
    }
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
    /// The daemon did not serve the request: the request's `config` is not the file it runs
    /// on, so the verb is for a file no daemon serves here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_its_file: bool,
}

/// Why a call to the daemon got no answer.
#[derive(Debug)]
pub enum CallError {
    /// No daemon is there (no socket file, or nobody listening on it): nothing was sent, and the
    /// verb can work on the file instead.
    NoDaemon(io::Error),
    /// The socket is there but could not be reached (e.g. permissions): nothing was sent.
    Connect(io::Error),
    /// The request could not be sent whole. The daemon acts only on a whole line, so nothing
    /// of it was done.
    Send(io::Error),
    /// The request was sent, but no well-formed answer came back: the daemon may or may not have
    /// acted on it.
    NoAnswer(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoDaemon(e) => write!(f, "no daemon answers: {e}"),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Send(e) => write!(f, "sending the request failed (nothing was done): {e}"),
            Self::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Sends `request` to the daemon listening at `socket` and waits for its answer.
///
/// # Errors
/// `NoDaemon` when connecting finds no daemon (missing socket, connection refused); `Connect`
/// when it fails otherwise; `Send` when the request could not be written; `NoAnswer` when it
/// was written and the answer is missing, late (60 s) or broken.
pub fn call(socket: &Path, request: &Request) -> Result<Response, CallError> {
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => CallError::NoDaemon(e),
        _ => CallError::Connect(e),
    })?;
    let mut line = serde_json::to_vec(request).map_err(|e| CallError::Send(io::Error::other(e)))?;
    line.push(b'\n');
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(CallError::Send)?;
    s.write_all(&line).map_err(CallError::Send)?;
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        return Err(CallError::NoAnswer(match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "none within 60 s".to_owned(),
            _ => format!("reading it failed: {e}"),
        }));
    }
    if buf.is_empty() {
        return Err(CallError::NoAnswer(
            "the connection closed without one (the daemon refuses callers that are not root \
             or its own user)"
                .to_owned(),
        ));
    }
    serde_json::from_slice(&buf)
        .map_err(|e| CallError::NoAnswer(format!("a broken answer from the daemon: {e}")))
}
