//! The configuration model: `sluice.toml` is the source of truth.
//!
//! `load` reads a file, parses it against the schema (unknown fields are errors), checks every
//! AWS Client VPN rule (`validate`), and checks the files it names (`pki`). Every error names
//! the file, line and column, the field, and says what is wrong. Nothing here writes files;
//! `admin` does, atomically, and only with a configuration that passed these checks.

pub mod change;
pub mod error;
pub mod files;
pub mod locate;
pub mod pki;
pub mod schema;
pub mod types;
pub mod validate;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Diagnostic, FieldPath};
pub use schema::Config;

use error::{line_col, line_cols};
use locate::Locator;
use validate::Finding;

/// The default configuration path.
pub const DEFAULT_PATH: &str = "/etc/sluice/sluice.toml";

/// A configuration that passed every check, with the text it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// Its text, as read.
    pub text: String,
    /// The parsed, validated configuration.
    pub config: Config,
}

impl Loaded {
    /// The directory relative paths in the configuration are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        base_dir(&self.path)
    }
}

/// The directory of `path`, where its relative paths are resolved.
pub fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The `[appliance]` section of the file at `path`, as far as it parses (defaults otherwise):
/// enough to find the admin socket and the audit trail even when the file fails validation.
pub fn appliance_of(path: &Path) -> schema::Appliance {
    appliance_in(&read_text(path).unwrap_or_default())
}

/// The text of the configuration file at `path`, which may be a pipe, read no further than
/// `files::CONFIG_LIMIT`.
///
/// # Errors
/// The file cannot be read, is larger than the limit (the message says why there is one), or
/// is not UTF-8. The message does not name the file: callers do.
pub fn read_text(path: &Path) -> Result<String, String> {
    files::read_named_text(path, files::CONFIG_LIMIT).map_err(|e| {
        if e == files::too_large(files::CONFIG_LIMIT) {
            format!(
                "{e}: a configuration with thousands of endpoints and rules is a few MiB, so \
                 this is not one, and it is not read whole"
            )
        } else {
            e
        }
    })
}

/// The `[appliance]` section of configuration `text`, as far as it parses (`appliance_of`).
pub fn appliance_in(text: &str) -> schema::Appliance {
    // Only the [appliance] table: the rest of the file may be broken.
    text.parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("appliance"))
        .and_then(|a| a.try_into::<schema::Appliance>().ok())
        .unwrap_or_default()
}

/// The admin socket of the configuration at `path`, resolved against its directory.
pub fn admin_socket_of(path: &Path) -> PathBuf {
    pki::resolve(&base_dir(path), &appliance_of(path).admin_socket)
}

/// Reads, parses and validates the configuration at `path`, including the files it names.
///
/// # Errors
/// Every problem found, each with its position, field and message.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = read_text(path).map_err(|e| {
        ConfigError::whole_file(path, format!("cannot read the configuration: {e}"))
    })?;
    check_text(path, text, None)
}

/// Parses and validates `text` as if it were the file at `path`; with `previous`, also checks
/// that the change from it is allowed (fields fixed at creation, deletions).
///
/// # Errors
/// Every problem found, each with its position, field and message.
pub fn check_text(
    path: &Path,
    text: String,
    previous: Option<&Config>,
) -> Result<Loaded, ConfigError> {
    let config = parse(path, &text)?;
    let mut findings = validate::validate(&config);
    findings.extend(pki::check_files(&config, &base_dir(path)));
    if let Some(old) = previous {
        findings.extend(change::check_change(old, &config));
    }
    if findings.is_empty() {
        Ok(Loaded {
            path: path.to_path_buf(),
            text,
            config,
        })
    } else {
        Err(diagnose(path, &text, findings))
    }
}

/// Parses `text` against the schema only (syntax, types, unknown fields, value formats).
///
/// # Errors
/// The first problem toml reports, with its position.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    toml::from_str::<Config>(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(text, offset);
        ConfigError {
            file: path.to_path_buf(),
            diagnostics: vec![Diagnostic {
                field: field_at(text, offset),
                line,
                column,
                message: e.message().trim().to_owned(),
            }],
        }
    })
}

/// Turns findings into positioned diagnostics, in document order.
fn diagnose(path: &Path, text: &str, findings: Vec<Finding>) -> ConfigError {
    let locator = Locator::new(text);
    let mut placed: Vec<(usize, Finding)> = findings
        .into_iter()
        .map(|f| (locator.span(&f.0).start, f))
        .collect();
    placed.sort_by_key(|(o, _)| *o);
    // Positions in one pass over the text: counted from the start for each finding, a file
    // of many (an array of thousands of bad entries) took hours.
    let offsets: Vec<usize> = placed.iter().map(|(o, _)| *o).collect();
    let mut diagnostics: Vec<(usize, Diagnostic)> = placed
        .into_iter()
        .zip(line_cols(text, &offsets))
        .map(|((offset, (field, message)), (line, column))| {
            (
                offset,
                Diagnostic {
                    field: field.to_string(),
                    line,
                    column,
                    message,
                },
            )
        })
        .collect();
    diagnostics.dedup_by(|a, b| a.1 == b.1);
    ConfigError {
        file: path.to_path_buf(),
        diagnostics: diagnostics.into_iter().map(|(_, d)| d).collect(),
    }
}

/// A best-effort name for what sits at `offset`: the key on that line, or its table header.
fn field_at(text: &str, offset: usize) -> String {
    let start = text
        .get(..offset.min(text.len()))
        .and_then(|b| b.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line = text
        .get(start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("")
        .trim();
    if let Some((key, _)) = line.split_once('=') {
        let key = key.trim();
        if !key.is_empty() && !key.starts_with('[') {
            return key.to_owned();
        }
    }
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned();
    }
    "(file)".to_owned()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// For tests across the crate: an `[[endpoint]]` with mutual authentication, `id`, the client
/// CIDR `cidr` and `vpn_port` `port`, then `extra` (its rules, target networks...).
#[cfg(test)]
pub(crate) fn endpoint_toml(id: &str, cidr: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
[[endpoint]]
id = "{id}"
client_cidr_block = "{cidr}"
server_certificate = "s.crt"
server_key = "s.key"
dns_name = "vpn.example.internal"
vpn_port = {port}
authentication = {{ mutual = {{ client_root_ca = "ca.crt" }} }}
{extra}"#
    )
}
