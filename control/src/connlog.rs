//! The per-endpoint connection log, sluice's CloudWatch Logs stream: one JSON line per
//! connection attempt or reset, with AWS Client VPN's field names and conventions (string
//! values, `NA` where a value does not apply), rotated by size.
//!
//! It records who connected from where and how much traffic flowed, never credentials: the
//! record type has no field that could hold a password, key or TOTP code.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::timefmt::log_time;

/// `connection-attempt` or `connection-reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogType {
    /// A client tried to connect (successfully or not).
    Attempt,
    /// A connection ended, or its counters were updated while it lasts.
    Reset,
}

/// Why an attempt failed, with the precise names the log uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The client certificate did not verify against the client root CA.
    BadCertificate,
    /// The client certificate is on the CRL.
    CertificateRevoked,
    /// The CRL's nextUpdate has passed; every new connection is refused until a new CRL.
    CrlExpired,
    /// Unknown user or wrong password.
    BadPassword,
    /// MFA was required and the code was wrong, missing or reused.
    MfaFailed,
    /// MFA was required and the user gave too many wrong codes in a row: codes are not
    /// checked for a while.
    MfaLocked,
    /// The endpoint is at its connection quota, or its client address pool is used up.
    SessionLimit,
    /// The endpoint has no target network associated (`pending-associate`): it takes no
    /// connection until one is (the guide: clients can no longer establish a VPN connection).
    NoTargetNetwork,
    /// Every data core's session table is full (`[dataplane] sessions_per_core`).
    DataPlaneFull,
    /// As many password checks as the endpoint takes at once are under way
    /// (`proto::server::MAX_VERIFYING`): the client is asked to try again shortly.
    VerifierBusy,
    /// The client offered no data cipher the server has (`IV_CIPHERS`: only CBC ones, say).
    NoSharedCipher,
    /// The TLS handshake failed for another reason.
    TlsError(String),
    /// The handshake did not complete within the deadline.
    HandshakeTimeout,
    /// Anything else, described.
    Other(String),
}

impl FailureReason {
    /// Whether the refusal passes (room, a target network, or a free password checker may
    /// come): the client is told to try again later (`AUTH_FAILED,TEMP`) instead of to give up.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::SessionLimit | Self::DataPlaneFull | Self::NoTargetNetwork | Self::VerifierBusy
        )
    }

    /// Whether the refusal is for want of room (a temporary one but `NoTargetNetwork`).
    pub fn is_for_room(&self) -> bool {
        matches!(self, Self::SessionLimit | Self::DataPlaneFull)
    }

    /// The text written in `connection-attempt-failure-reason`.
    pub fn text(&self) -> String {
        match self {
            Self::BadCertificate => "client certificate verification failed".into(),
            Self::CertificateRevoked => "client certificate revoked".into(),
            Self::CrlExpired => "certificate revocation list expired".into(),
            Self::BadPassword => "authentication failed: bad username or password".into(),
            Self::MfaFailed => "multi-factor authentication failed".into(),
            Self::MfaLocked => {
                "multi-factor authentication failed: too many wrong codes in a row, codes are \
                 refused for 5 minutes"
                    .into()
            }
            Self::SessionLimit => "connection limit reached".into(),
            Self::NoTargetNetwork => "the endpoint has no target network associated".into(),
            Self::DataPlaneFull => {
                "no room on the data cores (dataplane.sessions_per_core on every core)".into()
            }
            Self::VerifierBusy => "too many password checks under way at once".into(),
            Self::NoSharedCipher => "no common data cipher in IV_CIPHERS".into(),
            Self::TlsError(s) => format!("TLS error: {s}"),
            Self::HandshakeTimeout => "TLS handshake timed out".into(),
            Self::Other(s) => s.clone(),
        }
    }
}

/// One connection's state, as the log reports it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `cvpn-connection-` followed by 17 hex digits.
    pub connection_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// When the attempt started.
    pub start: SystemTime,
    /// The virtual address assigned, once assigned.
    pub client_ip: Option<Ipv4Addr>,
    /// The client certificate's common name, if one was presented.
    pub common_name: Option<String>,
    /// The directory user name, if one was given.
    pub username: Option<String>,
    /// The client's public address.
    pub device_ip: IpAddr,
    /// The client's source port.
    pub port: u16,
    /// Bytes from the client.
    pub ingress_bytes: u64,
    /// Bytes to the client.
    pub egress_bytes: u64,
    /// Packets from the client.
    pub ingress_packets: u64,
    /// Packets to the client.
    pub egress_packets: u64,
}

/// A fresh connection id.
pub fn connection_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let hex: String = (0..17)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect();
    format!("cvpn-connection-{hex}")
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Line<'a> {
    connection_log_type: &'static str,
    connection_attempt_status: &'static str,
    connection_attempt_failure_reason: String,
    connection_id: &'a str,
    client_vpn_endpoint_id: &'a str,
    transport_protocol: &'static str,
    connection_start_time: String,
    connection_last_update_time: String,
    client_ip: String,
    common_name: &'a str,
    username: &'a str,
    device_ip: String,
    port: String,
    ingress_bytes: String,
    egress_bytes: String,
    ingress_packets: String,
    egress_packets: String,
    connection_end_time: String,
    connection_duration_seconds: String,
}

const NA: &str = "NA";

/// Formats one log line (without the newline).
///
/// `failure` is `Some` for a failed attempt; `end` is `Some` once the connection ended.
pub fn format_line(
    kind: LogType,
    c: &Connection,
    failure: Option<&FailureReason>,
    now: SystemTime,
    end: Option<SystemTime>,
) -> String {
    let duration = end
        .unwrap_or(now)
        .duration_since(c.start)
        .map_or(0, |d| d.as_secs());
    let line = Line {
        connection_log_type: match kind {
            LogType::Attempt => "connection-attempt",
            LogType::Reset => "connection-reset",
        },
        connection_attempt_status: match (kind, failure) {
            (LogType::Attempt, None) => "successful",
            (LogType::Attempt, Some(_)) => "failed",
            (LogType::Reset, _) => NA,
        },
        connection_attempt_failure_reason: failure
            .map_or_else(|| NA.to_owned(), FailureReason::text),
        connection_id: &c.connection_id,
        client_vpn_endpoint_id: &c.endpoint_id,
        transport_protocol: c.transport,
        connection_start_time: log_time(c.start),
        connection_last_update_time: log_time(now),
        client_ip: c
            .client_ip
            .map_or_else(|| NA.to_owned(), |ip| ip.to_string()),
        common_name: c.common_name.as_deref().unwrap_or(NA),
        username: c.username.as_deref().unwrap_or(NA),
        device_ip: c.device_ip.to_string(),
        port: c.port.to_string(),
        ingress_bytes: c.ingress_bytes.to_string(),
        egress_bytes: c.egress_bytes.to_string(),
        ingress_packets: c.ingress_packets.to_string(),
        egress_packets: c.egress_packets.to_string(),
        connection_end_time: end.map_or_else(|| NA.to_owned(), log_time),
        connection_duration_seconds: duration.to_string(),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// An append-only JSON-lines file rotated by size: `path`, `path.1`, ... `path.<keep>`.
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingLog {
    /// Opens (creating, mode 0600) the log at `path`.
    ///
    /// # Errors
    /// Any I/O error creating the directory or the file.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        match Self::open_or_later(path, max_bytes, keep) {
            (log, None) => Ok(log),
            (_, Some(err)) => Err(err),
        }
    }

    /// The log at `path`, opened now if it can be, otherwise at its first line that can
    /// (`append` opens a log that is not open): a directory not yet mounted or writable at
    /// start does not leave the endpoint without a log until a reload. The error is why it
    /// could not be opened now.
    pub fn open_or_later(path: &Path, max_bytes: u64, keep: u32) -> (Self, Option<io::Error>) {
        let mut log = Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
            size: 0,
        };
        let err = log.reopen().err();
        (log, err)
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Only a regular file: a FIFO would hold the control thread, a device (/dev/null) be
        // renamed away at the first rotation.
        let f = crate::config::files::open_append_regular(&self.path, 0o600)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// Whether `path` still names the file the log has open: an operator (or another tool's
    /// rotation) may have removed or renamed it, and lines written on would then be lost.
    fn is_at_path(&self, file: &File) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.path), file.metadata()) {
            (Ok(at_path), Ok(open)) => at_path.dev() == open.dev() && at_path.ino() == open.ino(),
            _ => false,
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
            let _ = std::fs::remove_file(name(self.keep));
            for i in (1..self.keep).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            std::fs::rename(&self.path, name(1))?;
        }
        // Rotated: if the new file cannot be made now (no inode left), the next line tries
        // again to make it, not to rotate again (which would push the kept files along).
        self.size = 0;
        self.reopen()
    }

    /// Appends one line, rotating first if it would take the file past its size.
    ///
    /// # Errors
    /// Any I/O error; the line is then lost but the log stays usable.
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.file.as_ref().is_some_and(|f| !self.is_at_path(f)) {
            self.reopen()?;
        }
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("connection log is not open"));
        };
        if let Err(e) = f.write_all(&buf) {
            // A write cut short (the disk full) leaves the start of the line: it is cut off,
            // so that the next line does not continue it and every line stays one record.
            // Where even that fails, the file is opened again (and its size read) next time.
            if f.set_len(self.size).is_err() {
                self.file = None;
            }
            return Err(e);
        }
        self.size += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn conn() -> Connection {
        Connection {
            connection_id: connection_id(),
            endpoint_id: "cvpn-endpoint-0123456789abcdef0".into(),
            transport: "udp",
            start: UNIX_EPOCH + Duration::from_secs(1_795_574_107),
            client_ip: Some(Ipv4Addr::new(10, 200, 0, 2)),
            common_name: Some("client1.domain.tld".into()),
            username: None,
            device_ip: IpAddr::V4(Ipv4Addr::new(192, 168, 50, 2)),
            port: 50096,
            ingress_bytes: 1200,
            egress_bytes: 3400,
            ingress_packets: 10,
            egress_packets: 12,
        }
    }

    #[test]
    fn successful_attempt_has_aws_fields() {
        let c = conn();
        let line = format_line(LogType::Attempt, &c, None, c.start, None);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["connection-log-type"], "connection-attempt");
        assert_eq!(v["connection-attempt-status"], "successful");
        assert_eq!(v["connection-attempt-failure-reason"], "NA");
        assert_eq!(
            v["client-vpn-endpoint-id"],
            "cvpn-endpoint-0123456789abcdef0"
        );
        assert_eq!(v["connection-start-time"], "2026-11-25 02:35:07");
        assert_eq!(v["client-ip"], "10.200.0.2");
        assert_eq!(v["common-name"], "client1.domain.tld");
        assert_eq!(v["username"], "NA");
        assert_eq!(v["port"], "50096");
        assert_eq!(v["ingress-bytes"], "1200");
        assert_eq!(v["connection-end-time"], "NA");
        assert!(v["connection-id"]
            .as_str()
            .unwrap()
            .starts_with("cvpn-connection-"));
        assert_eq!(v.as_object().unwrap().len(), 19);
    }

    #[test]
    fn failed_attempt_and_reset() {
        let c = conn();
        let failed = format_line(
            LogType::Attempt,
            &c,
            Some(&FailureReason::CrlExpired),
            c.start,
            None,
        );
        assert!(failed.contains("\"connection-attempt-status\":\"failed\""));
        assert!(failed.contains("certificate revocation list expired"));
        let end = c.start + Duration::from_secs(90);
        let reset = format_line(LogType::Reset, &c, None, end, Some(end));
        let v: serde_json::Value = serde_json::from_str(&reset).unwrap();
        assert_eq!(v["connection-duration-seconds"], "90");
        assert_eq!(v["connection-end-time"], "2026-11-25 02:36:37");
        assert_eq!(v["connection-attempt-status"], "NA");
    }

    /// Strings a client or its certificate controls: quotes, backslashes, control
    /// characters, line and paragraph separators, anything.
    fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex(
            "([\"\\\\\\x00-\\x1f\\x7f\\u{85}\\u{2028}\\u{2029}\\u{feff}]|.)*",
        )
        .expect("regex")
    }

    proptest::proptest! {
        /// Whatever the common name, user name and failure text, a record is one line of one
        /// JSON object with the 19 fields, the names in it exactly as given; appended, it is
        /// one line of the file.
        #[test]
        fn a_record_is_one_json_line_whatever_the_names(
            common_name in proptest::option::of(hostile()),
            username in proptest::option::of(hostile()),
            detail in hostile(),
            failed in proptest::bool::ANY,
        ) {
            let mut c = conn();
            c.common_name = common_name.clone();
            c.username = username.clone();
            let reason = FailureReason::TlsError(detail.clone());
            let failure = failed.then_some(&reason);
            let line = format_line(LogType::Attempt, &c, failure, c.start, None);
            proptest::prop_assert!(!line.contains(['\n', '\r']), "{:?}", line);
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
            proptest::prop_assert_eq!(v.as_object().map(|o| o.len()), Some(19));
            proptest::prop_assert_eq!(
                v["common-name"].as_str(),
                Some(common_name.as_deref().unwrap_or("NA"))
            );
            proptest::prop_assert_eq!(
                v["username"].as_str(),
                Some(username.as_deref().unwrap_or("NA"))
            );
            if failed {
                let want = format!("TLS error: {detail}");
                proptest::prop_assert_eq!(
                    v["connection-attempt-failure-reason"].as_str(),
                    Some(want.as_str())
                );
            }

            let dir = tempfile::tempdir().expect("tempdir");
            let p = dir.path().join("ep.log");
            let mut log = RotatingLog::open(&p, 1 << 20, 1).expect("open");
            log.append(&line).expect("append");
            log.append(&line).expect("append");
            let text = std::fs::read_to_string(&p).expect("read");
            proptest::prop_assert_eq!(text.lines().count(), 2);
            for l in text.lines() {
                proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(l).is_ok());
            }
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/ep.log");
        let mut log = RotatingLog::open(&p, 100, 2).unwrap();
        let line = "x".repeat(39); // 40 bytes with the newline
        for _ in 0..7 {
            log.append(&line).unwrap();
        }
        let size = |s: &str| {
            std::fs::metadata(dir.path().join(format!("logs/{s}")))
                .map(|m| m.len())
                .ok()
        };
        assert_eq!(size("ep.log"), Some(40));
        assert_eq!(size("ep.log.1"), Some(80));
        assert_eq!(size("ep.log.2"), Some(80));
        assert_eq!(size("ep.log.3"), None);
    }

    #[test]
    fn a_removed_file_is_started_again_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ep.log");
        let mut log = RotatingLog::open(&p, 100, 2).unwrap();
        let line = |c: char| c.to_string().repeat(39); // 40 bytes with the newline
        log.append(&line('a')).unwrap();
        log.append(&line('b')).unwrap();
        // An operator removes the file: the next lines go to a new one at the path, which
        // rotates as the first would have.
        std::fs::remove_file(&p).unwrap();
        log.append(&line('c')).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", line('c'))
        );
        log.append(&line('d')).unwrap();
        log.append(&line('e')).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", line('e'))
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ep.log.1")).unwrap(),
            format!("{}\n{}\n", line('c'), line('d'))
        );
        // Removed again just as it was due to rotate: nothing is lost and nothing shifts.
        log.append(&line('f')).unwrap();
        std::fs::remove_file(&p).unwrap();
        log.append(&line('g')).unwrap();
        log.append(&line('h')).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n{}\n", line('g'), line('h'))
        );
        assert!(!dir.path().join("ep.log.2").exists());
    }

    /// A log path that names a FIFO is refused at once, not waited on (for a reader, the control
    /// thread with it); one that names a device (a node like /dev/null, made in the temporary
    /// directory) is refused, its lines not written, and it is never rotated (renamed away).
    #[test]
    fn a_log_that_is_not_a_regular_file_is_refused_and_never_rotated() {
        use crate::config::files::tests::{fifo_in, within};
        use std::os::unix::fs::FileTypeExt;

        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo_in(dir.path());
        let p = fifo.clone();
        let e = within("opening a FIFO as the log", move || {
            RotatingLog::open(&p, 100, 2).err()
        })
        .expect("refused");
        assert_eq!(e.to_string(), "not a regular file");
        // Making a device node needs root, as this crate's other lib tests (DPDK) do: without
        // it the test fails, it does not pass having checked half.
        assert!(
            rustix::process::geteuid().is_root(),
            "this test makes a device node (mknod): run it as root, as scripts/test.sh does"
        );
        let null = dir.path().join("null");
        let made = std::process::Command::new("mknod")
            .arg(&null)
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(made.success(), "mknod");
        let (mut log, err) = RotatingLog::open_or_later(&null, 100, 2);
        assert_eq!(err.unwrap().to_string(), "not a regular file");
        for _ in 0..5 {
            assert!(log.append(&"x".repeat(39)).is_err());
        }
        assert!(std::fs::metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device());
        assert!(!dir.path().join("null.1").exists());
    }

    /// A log that cannot be opened at first is opened at its first line that can be written.
    #[test]
    fn a_log_that_cannot_be_opened_yet_is_opened_at_a_later_line() {
        let dir = tempfile::tempdir().unwrap();
        // Its directory's place is taken by a file: nothing can be made there.
        let blocker = dir.path().join("logs");
        std::fs::write(&blocker, b"").unwrap();
        let p = blocker.join("ep.log");
        let (mut log, err) = RotatingLog::open_or_later(&p, 1 << 20, 1);
        assert!(err.is_some());
        assert!(log.append("lost").is_err());
        std::fs::remove_file(&blocker).unwrap();
        log.append("kept").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "kept\n");
    }

    #[test]
    fn a_full_disk_leaves_no_part_line() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = sluice_tests::SmallTmpfs::mount(tmp.path(), 8192, 8);
        let filler = fs.path().join("filler");
        std::fs::write(&filler, [0u8; 4096]).unwrap();
        let p = fs.path().join("ep.log");
        let mut log = RotatingLog::open(&p, 1 << 20, 1).unwrap();
        let line = "x".repeat(99); // 100 bytes with the newline; 4096 is no multiple of 100
        let mut written = 0;
        while log.append(&line).is_ok() {
            written += 1;
            assert!(written < 100, "the tmpfs never filled");
        }
        // Room again: the next line is a line of its own, after only whole lines.
        std::fs::remove_file(&filler).unwrap();
        log.append("last").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            format!("{}last\n", format!("{line}\n").repeat(written))
        );
    }

    #[test]
    fn a_rotation_that_cannot_make_the_new_file_keeps_the_old_one() {
        // Three inodes: the root, the log and a filler; after the log is renamed aside at
        // rotation there is none for the new file until the filler goes.
        let tmp = tempfile::tempdir().unwrap();
        let fs = sluice_tests::SmallTmpfs::mount(tmp.path(), 1 << 20, 3);
        let p = fs.path().join("ep.log");
        let mut log = RotatingLog::open(&p, 100, 1).unwrap();
        let filler = fs.path().join("filler");
        std::fs::write(&filler, b"").unwrap();
        let line = |c: char| c.to_string().repeat(39); // 40 bytes with the newline
        log.append(&line('a')).unwrap();
        log.append(&line('b')).unwrap();
        assert!(log.append(&line('c')).is_err(), "no inode for the new file");
        assert!(log.append(&line('d')).is_err(), "still none");
        std::fs::remove_file(&filler).unwrap();
        log.append(&line('e')).unwrap();
        assert_eq!(
            std::fs::read_to_string(fs.path().join("ep.log.1")).unwrap(),
            format!("{}\n{}\n", line('a'), line('b')),
            "the rotated file is kept"
        );
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", line('e'))
        );
    }
}
