//! The management verbs behind `sluice VERB`, mirroring the AWS CLI's Client VPN commands.
//!
//! Every verb works on the configuration file: describe verbs read it, mutating verbs edit it
//! through `Editor` (comments kept, result validated, atomic write). Responses are JSON shaped
//! like the AWS API's, or a table for people. This module owns no network state; the running
//! appliance (a later part) applies the same verbs through its admin socket.

pub mod audit;
pub mod cli;
pub mod describe;
pub mod editor;
pub mod export;
pub mod filters;
pub mod paging;
pub mod persist;
pub mod shorthand;
pub mod table;
pub mod top;
pub mod verbs;

use std::fmt;
use std::time::SystemTime;

use crate::config::ConfigError;

/// Runs the verb `cli` names for `caller`, and records it in the audit trail, allowed or refused.
/// A failure to write the trail is reported on stderr and does not undo the action. With a
/// configuration file that cannot be read there is no trail, and nothing is recorded: every verb
/// that needs the file was refused before it did anything (`audit::trail_path`).
///
/// # Errors
/// As `verbs::run`.
pub fn execute(
    cli: &cli::Cli,
    caller: &audit::Caller,
    now: SystemTime,
) -> Result<verbs::Response, AdminError> {
    execute_with(cli, caller, now, verbs::run)
}

/// `execute` with another implementation of the verb (the running daemon's live verbs), audited
/// the same way.
///
/// # Errors
/// What `run` refuses.
pub fn execute_with(
    cli: &cli::Cli,
    caller: &audit::Caller,
    now: SystemTime,
    run: impl FnOnce(&cli::Cli) -> Result<verbs::Response, AdminError>,
) -> Result<verbs::Response, AdminError> {
    let result = run(cli);
    let Some(trail) = audit::trail_path(&cli.config) else {
        return result;
    };
    let event = audit::event(cli, caller, now, result.as_ref().map(|r| &r.json));
    if let Err(e) = audit::append(&trail, &event) {
        eprintln!(
            "warning: could not append to the audit trail {}: {e}",
            trail.display()
        );
    }
    result
}

/// Why a verb refused or failed.
#[derive(Debug)]
pub enum AdminError {
    /// The configuration (as found, or as the change would make it) breaks a rule.
    Config(ConfigError),
    /// A request the AWS API would refuse, with AWS's error code.
    Request {
        /// The AWS error code, like `InvalidClientVpnEndpointId.NotFound`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    Io(String),
    /// A bug: the document and its parsed form disagree.
    Internal(String),
}

impl AdminError {
    /// A request error.
    pub fn request(code: &'static str, message: impl Into<String>) -> Self {
        Self::Request {
            code,
            message: message.into(),
        }
    }

    /// The endpoint id names no endpoint.
    pub fn endpoint_not_found(id: &str) -> Self {
        Self::request(
            "InvalidClientVpnEndpointId.NotFound",
            format!("the Client VPN endpoint {id} does not exist"),
        )
    }

    /// The process exit status: 2 for a refused request or invalid configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Request { .. } => 2,
            Self::Io(_) | Self::Internal(_) => 1,
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Request { code, message } => write!(f, "An error occurred ({code}): {message}"),
            Self::Io(m) => write!(f, "I/O error: {m}"),
            Self::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<ConfigError> for AdminError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}
