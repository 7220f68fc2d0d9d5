//! Edits the configuration file in place with `toml_edit`, so comments and layout of what a verb
//! did not touch survive, then validates the result against every rule and against the file it
//! replaces, and only then writes it atomically. A refused change leaves the file byte-identical.
//! One verb at a time changes a file: the next waits until the change is written (or refused).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use super::persist::write_atomic;
use super::AdminError;
use crate::config::{self, Loaded};

/// An open configuration being changed by one verb.
pub struct Editor {
    path: PathBuf,
    old: Loaded,
    doc: DocumentMut,
    /// The file, locked for this change (`lock`); released when the editor goes.
    _lock: File,
}

/// How long a change waits for the one under way (which holds the lock for milliseconds): a
/// lock held longer is not a verb's, and the change is refused rather than wait on it (the
/// daemon runs verbs on its control thread).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Locks the configuration file at `path` for one change (`flock`, exclusive), waiting for a
/// change under way to be written or refused: verbs run at once (a script starting them in
/// the background) would otherwise each read the same file, and the last to write would
/// undo the others' changes, each having said it succeeded. A change is written by renaming a
/// new file over the old one, so a lock taken on a file since replaced is taken again on the
/// file now there.
///
/// # Errors
/// The file cannot be opened or locked, or its lock stayed held for `LOCK_PATIENCE`.
#[allow(clippy::disallowed_methods)] // a shell around a file lock: it reads the clock and waits
fn lock(path: &Path) -> Result<File, AdminError> {
    let failed = |e: String| AdminError::Io(format!("locking {}: {e}", path.display()));
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        let (file, _) = config::files::open_regular(path).map_err(failed)?;
        let exclusive = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        while let Err(e) = rustix::fs::flock(&file, exclusive) {
            if e != rustix::io::Errno::WOULDBLOCK {
                return Err(failed(e.to_string()));
            }
            if std::time::Instant::now() >= deadline {
                return Err(failed(format!(
                    "another process has held its lock for {} s, longer than a change takes",
                    LOCK_PATIENCE.as_secs()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let (held, now) = (
            file.metadata().map_err(|e| failed(e.to_string()))?,
            std::fs::metadata(path).map_err(|e| failed(e.to_string()))?,
        );
        if (held.dev(), held.ino()) == (now.dev(), now.ino()) {
            return Ok(file);
        }
    }
}

impl Editor {
    /// Loads and validates the file; a file that is already invalid cannot be edited by verbs.
    ///
    /// # Errors
    /// The file's validation errors, or an unreadable file.
    pub fn open(path: &Path) -> Result<Self, AdminError> {
        // A file that cannot be locked cannot be loaded either: the load says why.
        let lock = lock(path);
        let old = config::load(path)?;
        let lock = lock?;
        let doc: DocumentMut = old
            .text
            .parse()
            .map_err(|e| AdminError::Internal(format!("re-parsing {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            old,
            doc,
            _lock: lock,
        })
    }

    /// The configuration as it was before this change.
    pub fn old(&self) -> &Loaded {
        &self.old
    }

    /// The configuration file's directory.
    pub fn base_dir(&self) -> PathBuf {
        self.old.base_dir()
    }

    /// The index of the endpoint with this id.
    ///
    /// # Errors
    /// `InvalidClientVpnEndpointId.NotFound` when there is none.
    pub fn endpoint_index(&self, id: &str) -> Result<usize, AdminError> {
        self.old
            .config
            .endpoints
            .iter()
            .position(|e| e.id.as_str() == id)
            .ok_or_else(|| AdminError::endpoint_not_found(id))
    }

    /// The `[[endpoint]]` array, created if absent.
    ///
    /// # Errors
    /// Internal error if the document holds something else under `endpoint` (cannot happen
    /// for a document that parsed into a configuration).
    pub fn endpoints_mut(&mut self) -> Result<&mut ArrayOfTables, AdminError> {
        aot_mut(self.doc.as_table_mut(), "endpoint")
    }

    /// The `[[endpoint]]` table at `index`.
    ///
    /// # Errors
    /// Internal error if the document and the parsed config disagree (cannot happen for a
    /// document that parsed into that config).
    pub fn endpoint_mut(&mut self, index: usize) -> Result<&mut Table, AdminError> {
        self.endpoints_mut()?.get_mut(index).ok_or_else(|| {
            AdminError::Internal(format!("endpoint[{index}] missing from the document"))
        })
    }

    /// The `[[endpoint.NAME]]` array of the endpoint at `index`, created if absent.
    ///
    /// # Errors
    /// As `endpoint_mut`.
    pub fn endpoint_array_mut(
        &mut self,
        index: usize,
        name: &str,
    ) -> Result<&mut ArrayOfTables, AdminError> {
        aot_mut(self.endpoint_mut(index)?, name)
    }

    /// The text the change would write.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Validates the changed document and writes it atomically.
    ///
    /// # Errors
    /// The validation errors of the result (the file is untouched), or an I/O error.
    pub fn commit(self) -> Result<Loaded, AdminError> {
        let text = self.doc.to_string();
        let new = config::check_text(&self.path, text, Some(&self.old.config))?;
        write_atomic(&self.path, new.text.as_bytes())
            .map_err(|e| AdminError::Io(format!("writing {}: {e}", self.path.display())))?;
        Ok(new)
    }
}

/// The array of tables `key` in `table`, created if absent. An inline array of tables
/// (`route = [{ ... }, { ... }]`, which TOML allows and validation accepts) is made an array of
/// tables with the same entries, so a verb adds to it or removes from it as from any other.
///
/// # Errors
/// Internal error for anything else under `key` (no configuration that parsed has one).
fn aot_mut<'a>(table: &'a mut Table, key: &str) -> Result<&'a mut ArrayOfTables, AdminError> {
    let item = table
        .entry(key)
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    if !item.is_array_of_tables() {
        *item = match std::mem::take(item).into_array_of_tables() {
            Ok(tables) => Item::ArrayOfTables(tables),
            // Nothing in it: nothing to keep.
            Err(Item::Value(Value::Array(a))) if a.is_empty() => {
                Item::ArrayOfTables(ArrayOfTables::new())
            }
            Err(other) => {
                *item = other;
                return Err(not_tables(key));
            }
        };
        // The spacing around the key of `key = [...]` (a blank line before it) would land
        // inside each `[[key]]` header, and break it.
        if let Some(mut k) = table.key_mut(key) {
            k.leaf_decor_mut().clear();
        }
    }
    match table.get_mut(key) {
        Some(Item::ArrayOfTables(a)) => Ok(a),
        _ => Err(not_tables(key)),
    }
}

/// Removes the table at `index` of `tables`, the index of an entry of the parsed configuration.
///
/// # Errors
/// Internal error if the document has no such table (it and the configuration it parsed into
/// disagree), instead of `ArrayOfTables::remove`'s panic.
pub fn remove_at(tables: &mut ArrayOfTables, index: usize) -> Result<(), AdminError> {
    if index >= tables.len() {
        return Err(AdminError::Internal(format!(
            "entry {index} of {} missing from the document",
            tables.len()
        )));
    }
    tables.remove(index);
    Ok(())
}

fn not_tables(key: &str) -> AdminError {
    AdminError::Internal(format!("`{key}` is not an array of tables in the document"))
}
