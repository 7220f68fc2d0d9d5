//! The audit trail, sluice's CloudTrail: every management action, allowed or refused, appended
//! as one JSON line with who asked, what, the parameters, the result and the time.
//!
//! Parameters are the verb's flags; none of them carries a secret (keys and CRLs are passed by
//! path). Lines are appended with one `write` to a file opened in append mode, so concurrent
//! writers do not interleave within a line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

use super::cli::Cli;
use super::AdminError;
use crate::config;
use crate::timefmt::rfc3339;

/// Who asked for an action.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The local user running the `sluice` command.
    Local {
        /// Real user id.
        uid: u32,
        /// The user's name, when known.
        name: Option<String>,
        /// The user who ran `sudo`, if any.
        sudo_user: Option<String>,
    },
    /// A peer of the admin socket, from its Unix credentials.
    Socket {
        /// Peer user id.
        uid: u32,
        /// Peer process id.
        pid: i32,
    },
    /// A signal to the daemon (SIGHUP: reload), with the process that sent it when the kernel
    /// says (`kill`, `systemctl reload`).
    Signal {
        /// Its name, as `SIGHUP`.
        signal: &'static str,
        /// The sender's user id.
        uid: Option<u32>,
        /// The sender's process id.
        pid: Option<i32>,
    },
}

impl Caller {
    /// The user running this process, from `/proc/self/status` and the environment.
    pub fn local() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX);
        let name = user_name(uid);
        let sudo_user = std::env::var("SUDO_USER").ok();
        Self::Local {
            uid,
            name,
            sudo_user,
        }
    }

    fn identity(&self) -> Value {
        match self {
            Self::Local {
                uid,
                name,
                sudo_user,
            } => {
                json!({ "type": "LocalUser", "uid": uid, "userName": name, "sudoUser": sudo_user })
            }
            Self::Socket { uid, pid } => json!({ "type": "AdminSocket", "uid": uid, "pid": pid }),
            Self::Signal { signal, uid, pid } => {
                json!({ "type": "Signal", "signal": signal, "uid": uid, "pid": pid })
            }
        }
    }
}

/// The name of `uid` from /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// Where the audit trail of the configuration at `config_path` goes: `[appliance] audit_log`,
/// else `audit.log` in the state directory. Works on files that fail validation, so refused
/// actions are recorded too: only the `[appliance]` table need parse (as when the admin socket
/// is looked for). `None` when the file cannot be read: it names no trail, and every verb that
/// needs it is refused before it did anything (a default trail would get lines about a file
/// that is not its own); `None` too for a configuration that is not a regular file (a pipe,
/// a FIFO: the verb read it, and nothing can change it, so only read-only verbs ran); `None`
/// as well for a file that is not TOML, or whose `[appliance]` table does not parse: it names
/// no trail either, which the defaults would make up (every verb that needs the file is
/// refused then too). A TOML file without `[appliance]` names the default trail.
pub fn trail_path(config_path: &Path) -> Option<PathBuf> {
    // Read again after the verb, so only a regular file: a pipe (`--config <(...)`) or a FIFO
    // was drained by the verb, and opening a FIFO again would wait for a writer for good.
    let text =
        crate::config::files::read_regular_text(config_path, crate::config::files::CONFIG_LIMIT)
            .ok()?;
    let mut table = text.parse::<toml::Table>().ok()?;
    let appliance = match table.remove("appliance") {
        Some(a) => a.try_into::<config::schema::Appliance>().ok()?,
        None => config::schema::Appliance::default(),
    };
    Some(trail_of(&config::base_dir(config_path), &appliance))
}

/// Where the audit trail of a configuration with this `[appliance]` section, whose relative
/// paths are resolved against `base`, goes.
pub fn trail_of(base: &Path, appliance: &config::schema::Appliance) -> PathBuf {
    let path = appliance
        .audit_log
        .clone()
        .unwrap_or_else(|| appliance.state_dir.join("audit.log"));
    config::pki::resolve(base, &path)
}

/// The CloudTrail-style event name of the verb, e.g. `CreateClientVpnEndpoint`.
pub fn event_name(cli: &Cli) -> String {
    let v = serde_json::to_value(&cli.verb).unwrap_or(Value::Null);
    match v {
        Value::String(s) => s,
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// The event for `cli` run by `caller` at `now`, with its outcome.
pub fn event(
    cli: &Cli,
    caller: &Caller,
    now: SystemTime,
    outcome: Result<&Value, &AdminError>,
) -> Value {
    let params = match serde_json::to_value(&cli.verb) {
        Ok(Value::Object(m)) => m.into_iter().next().map_or(Value::Null, |(_, v)| v),
        _ => Value::Null,
    };
    let mut e = json!({
        "eventVersion": "1.0",
        "eventTime": rfc3339(now),
        "eventSource": "sluice",
        "eventName": event_name(cli),
        "readOnly": is_read_only(cli),
        "userIdentity": caller.identity(),
        "configFile": cli.config,
        "requestParameters": params,
    });
    match outcome {
        // Like CloudTrail, read-only events do not repeat what was read.
        Ok(_) if is_read_only(cli) => {}
        Ok(response) => e["responseElements"] = response.clone(),
        Err(err) => {
            e["errorCode"] = json!(match err {
                AdminError::Config(_) => "InvalidConfiguration",
                AdminError::Request { code, .. } => code,
                AdminError::Io(_) => "IoError",
                AdminError::Internal(_) => "InternalError",
            });
            e["errorMessage"] = json!(shortened(err.to_string()));
        }
    }
    e
}

/// The longest `errorMessage` an event keeps, in bytes: a configuration with thousands of
/// findings gives a message of megabytes, which every refused verb (each validate) would
/// write into the trail whole.
pub const MAX_ERROR_MESSAGE: usize = 8192;

/// `message` cut to `MAX_ERROR_MESSAGE` bytes (between characters), saying how much is left
/// out; the whole of it went to the caller.
fn shortened(mut message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message;
    }
    let mut cut = MAX_ERROR_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let left_out = message.len() - cut;
    message.truncate(cut);
    message.push_str(&format!("... ({left_out} bytes more, not kept here)"));
    message
}

/// Whether the verb only reads (describe, export, validate).
pub fn is_read_only(cli: &Cli) -> bool {
    let n = event_name(cli);
    n.starts_with("Describe") || n.starts_with("Export") || n == "Validate" || n == "HashPassword"
}

/// Appends `event` as one line to the trail at `path`, creating it (mode 0600) if needed.
///
/// # Errors
/// Any I/O error.
pub fn append(path: &Path, event: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut line = serde_json::to_string(event).map_err(std::io::Error::other)?;
    line.push('\n');
    // Only a regular file: a FIFO without a reader would hold the verb (the daemon's control
    // thread with it).
    let mut f = crate::config::files::open_append_regular(path, 0o600)?;
    let before = f.metadata()?.len();
    f.write_all(line.as_bytes()).inspect_err(|_| {
        // A write cut short (the disk full) would leave the start of the line, and the next
        // event would continue it: the trail keeps whole lines only.
        let _ = f.set_len(before);
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The trail is the one the file names, when the rest of the file does not parse too;
    /// a file that cannot be read names none.
    #[test]
    fn the_trail_is_the_files_or_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("sluice.toml");
        assert_eq!(super::trail_path(&config), None, "no such file");
        assert_eq!(super::trail_path(tmp.path()), None, "a directory");
        std::fs::write(
            &config,
            "[appliance]\naudit_log = \"trail.log\"\n\n[[endpoint]]\nno_such_field = 1\n",
        )
        .expect("write");
        assert_eq!(
            super::trail_path(&config),
            Some(tmp.path().join("trail.log")),
            "an endpoint the schema refuses"
        );
        // Not TOML, or an [appliance] table that does not parse: no trail, not the default.
        std::fs::write(&config, "not = toml = at all\n").expect("write");
        assert_eq!(super::trail_path(&config), None, "not TOML");
        std::fs::write(&config, "[appliance]\nstate_dir = 5\n").expect("write");
        assert_eq!(super::trail_path(&config), None, "a broken [appliance]");
        std::fs::write(&config, "[appliance]\nstate_dir = \"state\"\n").expect("write");
        assert_eq!(
            super::trail_path(&config).as_deref(),
            Some(Path::new(&tmp.path().join("state/audit.log")))
        );
    }

    /// A refusal's message of megabytes (a configuration with thousands of findings) is kept
    /// in the event cut to `MAX_ERROR_MESSAGE` bytes, between characters, saying so; a short
    /// one whole.
    #[test]
    fn a_long_error_message_is_cut_in_the_event() {
        use clap::Parser;
        let cli =
            crate::admin::cli::Cli::try_parse_from(["sluice", "--config", "x.toml", "validate"])
                .expect("parses");
        let at = std::time::SystemTime::UNIX_EPOCH;
        let caller = super::Caller::local();
        let long = crate::admin::AdminError::request("InvalidConfiguration", "é".repeat(100_000));
        let e = super::event(&cli, &caller, at, Err(&long));
        let m = e["errorMessage"].as_str().expect("message");
        assert!(m.len() < super::MAX_ERROR_MESSAGE + 64, "{} bytes", m.len());
        let (kept, _) = m.split_once("... (").expect("says it is cut");
        assert!(long.to_string().starts_with(kept) && kept.len() + 2 > super::MAX_ERROR_MESSAGE);
        assert!(
            m.ends_with(" bytes more, not kept here)"),
            "{}",
            &m[m.len() - 60..]
        );
        let short = crate::admin::AdminError::request("InvalidParameterValue", "no such thing");
        let e = super::event(&cli, &caller, at, Err(&short));
        assert_eq!(e["errorMessage"], short.to_string());
    }

    /// An event the full disk cuts short leaves no part of it: the next one starts its own
    /// line, after whole lines only.
    #[test]
    fn a_full_disk_leaves_no_part_event() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fs = sluice_tests::SmallTmpfs::mount(tmp.path(), 8192, 8);
        let filler = fs.path().join("filler");
        std::fs::write(&filler, [0u8; 4096]).expect("filler");
        let trail = fs.path().join("audit.log");
        let event = serde_json::json!({ "eventName": "x".repeat(80) });
        let mut written = 0;
        while super::append(&trail, &event).is_ok() {
            written += 1;
            assert!(written < 100, "the tmpfs never filled");
        }
        std::fs::remove_file(&filler).expect("room again");
        super::append(&trail, &serde_json::json!({ "eventName": "last" })).expect("append");
        let text = std::fs::read_to_string(&trail).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), written + 1, "{text}");
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l).expect("each line is one event");
        }
    }

    /// A trail that is a FIFO is refused at once, not waited on (for a reader: the verb, and the
    /// daemon's control thread with it, would wait for good).
    #[test]
    fn a_trail_that_is_a_fifo_is_refused_at_once() {
        use crate::config::files::tests::{fifo_in, within};
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = fifo_in(tmp.path());
        let e = within("appending to a FIFO", move || {
            super::append(&fifo, &serde_json::json!({ "eventName": "x" })).err()
        })
        .expect("refused");
        assert_eq!(e.to_string(), "not a regular file");
    }
}
