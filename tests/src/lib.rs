//! Shared helpers for sluice's integration tests: the repository root, throwaway PKIs made with
//! easy-rsa, and network namespaces that are removed (with their processes) even when a test
//! fails.

pub mod pcap;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Makes a PKI with `scripts/gen-pki.sh` in `dir` (see the script for the files).
///
/// # Panics
/// If easy-rsa is missing or fails: the tests that need a PKI cannot run without one.
pub fn make_pki(dir: &Path) {
    let out = Command::new(repo().join("scripts/gen-pki.sh"))
        .arg(dir)
        .output()
        .expect("run scripts/gen-pki.sh");
    assert!(
        out.status.success(),
        "gen-pki.sh failed (is easy-rsa installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The PKI of a test binary, made once (`make_pki`; easy-rsa takes a few seconds) in the
/// directory `dir` gives, emptied first: `static PKI: OnceLock<PathBuf>` in the caller, and
/// `dir` under its `CARGO_TARGET_TMPDIR`.
pub fn pki_once(
    cell: &'static std::sync::OnceLock<PathBuf>,
    dir: impl FnOnce() -> PathBuf,
) -> &'static Path {
    cell.get_or_init(|| {
        let dir = dir();
        let _ = std::fs::remove_dir_all(&dir);
        make_pki(&dir);
        dir
    })
}

/// A rustls client (ring) that trusts the CA certificates of `ca_pem` and presents the chain
/// `cert_pem` with the key `key_pem`.
///
/// # Panics
/// If a PEM input does not parse or rustls refuses them.
pub fn tls_client(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.expect("CA PEM")).expect("CA certificate");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .map(|c| c.expect("certificate PEM"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key PEM");
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate and key"),
    )
}

/// Panics with a clear message unless the test runs as root: namespace tests must fail loudly,
/// never pass silently, where they cannot run.
pub fn require_root(what: &str) {
    // The effective uid, from /proc (no libc needed).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    assert_eq!(
        euid,
        Some(0),
        "{what} needs root (network namespaces); run the tests as root (scripts/test.sh does)"
    );
}

/// A tmpfs of `size` bytes with room for `inodes` files (its root directory one of them),
/// mounted on `dir` (an empty directory the caller removes after this is dropped) and
/// unmounted on drop: for what a full disk, or one out of inodes, does to a file's writer.
///
/// # Panics
/// Without root, or if the mount fails: the test cannot run, and says so.
pub struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// Mounts it.
    pub fn mount(dir: &Path, size: u32, inodes: u32) -> Self {
        require_root("mounting a small tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},nr_inodes={inodes}"))
            .arg("tmpfs")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A command for `program` that gets SIGKILL when the thread that spawns it exits, so nothing it
/// runs (a `sluice run` whose DPDK worker busy-polls a core, an `openvpn`) outlives a test
/// process that is killed (CI timeout, OOM killer, `kill -9`) before its `Drop`s run.
///
/// It runs `setpriv --pdeathsig KILL -- program` (util-linux, which scripts/lib.sh installs):
/// setpriv sets `PR_SET_PDEATHSIG` and execs `program`, so the child keeps its pid and
/// `Child::kill`/`wait` work as usual. (`pre_exec` calling `prctl` itself would be `unsafe`
/// code, which the project keeps to the DPDK modules and four small engine ones.)
///
/// The signal follows the spawning *thread*: spawn from the thread that owns the child (the
/// test's own thread), never from a short-lived helper thread, or the child dies with it.
pub fn dying_with_parent(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--"]).arg(program);
    c
}

/// The pid in a test namespace's name (`sl-<tag>-<pid>`, see [`Netns::new`]), if it has that
/// form.
#[must_use]
pub fn namespace_pid(name: &str) -> Option<u32> {
    let (tag, pid) = name.strip_prefix("sl-")?.rsplit_once('-')?;
    if tag.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Deletes (killing what runs in them) the test namespaces left by test processes that no
/// longer exist: one killed before its `Drop`s ran leaves its namespaces behind.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = namespace_pid(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("removing namespace {name}, left by process {pid}, which is gone");
                remove_namespace(&name);
            }
        }
    }
}

/// A network namespace that is deleted, with every process in it killed, when dropped.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `sl-<tag>-<pid>` with its loopback up, after deleting the
    /// namespaces of that scheme whose process is gone.
    ///
    /// # Panics
    /// If not root or `ip netns add` fails.
    pub fn new(tag: &str) -> Self {
        require_root("this test");
        remove_stale_namespaces();
        let name = format!("sl-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = Self { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command that runs `argv` inside the namespace.
    /// The process gets SIGKILL if the spawning thread exits first (see [`dying_with_parent`]).
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = dying_with_parent("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Joins this namespace to `other` with a veth pair, `addr` here and `other_addr` there
    /// (CIDR notation), both up.
    pub fn link(&self, other: &Self, addr: &str, other_addr: &str) {
        let (a, b) = (
            format!("v{}", &self.name[..self.name.len().min(12)]),
            format!("v{}", &other.name[..other.name.len().min(12)]),
        );
        self.ip(&[
            "link",
            "add",
            &a,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &other.name,
        ]);
        self.exec_ok(&["ip", "addr", "add", addr, "dev", &a]);
        self.exec_ok(&["ip", "link", "set", &a, "up"]);
        other.exec_ok(&["ip", "addr", "add", other_addr, "dev", &b]);
        other.exec_ok(&["ip", "link", "set", &b, "up"]);
    }

    /// A veth pair: `local_if` here, left without an address (for a DPDK `af_packet` port), and
    /// `other_if` in `other` with `other_addr` (none if empty); both up, and checksum offload
    /// off on both ends so the frames a packet socket reads carry complete checksums.
    pub fn veth_to(&self, local_if: &str, other: &Self, other_if: &str, other_addr: &str) {
        self.ip(&[
            "link",
            "add",
            local_if,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            other_if,
            "netns",
            &other.name,
        ]);
        self.exec_ok(&["ip", "link", "set", local_if, "up"]);
        if !other_addr.is_empty() {
            other.exec_ok(&["ip", "addr", "add", other_addr, "dev", other_if]);
        }
        other.exec_ok(&["ip", "link", "set", other_if, "up"]);
        for dev in [(self, local_if), (other, other_if)] {
            dev.0
                .exec_ok(&["ethtool", "-K", dev.1, "tx", "off", "rx", "off"]);
        }
    }

    /// Moves the calling thread into this namespace (sockets and packet sockets it opens
    /// afterwards live there) until the guard is dropped. Declare the guard after the
    /// namespaces, so it is dropped first: deleting a namespace kills the processes in it.
    ///
    /// # Panics
    /// If the namespace cannot be entered.
    #[must_use = "the thread returns to its namespace when the guard is dropped"]
    pub fn enter(&self) -> Entered {
        let original = std::fs::File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("open /proc/thread-self/ns/net: {e}"));
        let path = format!("/var/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        Entered { original }
    }

    /// A UDP socket bound to `addr` inside this namespace (the socket keeps the namespace
    /// whatever thread uses it later).
    ///
    /// # Panics
    /// If the namespace cannot be entered or the address not bound.
    pub fn bind_udp(&self, addr: &str) -> std::net::UdpSocket {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _inside = self.enter();
                    std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
                })
                .join()
                .unwrap_or_else(|_| panic!("binding inside the namespace failed"))
        })
    }

    /// Runs `argv` inside the namespace and returns its output.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.command(argv)
            .output()
            .unwrap_or_else(|e| panic!("running {argv:?} in {}: {e}", self.name))
    }

    /// Runs `argv` inside the namespace; panics unless it succeeds.
    pub fn exec_ok(&self, argv: &[&str]) -> Output {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// The calling thread is inside a test namespace; dropping this takes it back.
pub struct Entered {
    original: std::fs::File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&self.original),
            Some(rustix::thread::LinkNameSpaceType::Network),
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_namespace(&self.name);
    }
}

/// Kills every process in namespace `name` and deletes it. Never panics (it runs in `Drop`,
/// possibly while unwinding); whatever it cannot do it reports on stderr, so a namespace or
/// process left behind has a visible cause.
fn remove_namespace(name: &str) {
    match Command::new("ip").args(["netns", "pids", name]).output() {
        Ok(out) if out.status.success() => {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                kill9(pid, name);
            }
        }
        Ok(out) => eprintln!(
            "warning: ip netns pids {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("warning: cannot run ip netns pids {name}: {e}"),
    }
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "warning: ip netns del {name} failed ({}): {}; the namespace may be left behind",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => {
            eprintln!("warning: cannot run ip netns del {name}: {e}; the namespace is left behind")
        }
    }
}

/// `kill -9 pid` (procps, which scripts/lib.sh installs); a failure is reported on stderr
/// unless the process is already gone.
fn kill9(pid: &str, ns: &str) {
    let gone = || !Path::new("/proc").join(pid).exists();
    match Command::new("kill").args(["-9", pid]).output() {
        Ok(out) if out.status.success() => {}
        Ok(_) if gone() => {}
        Ok(out) => eprintln!(
            "warning: kill -9 {pid} (in namespace {ns}) failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!(
            "warning: cannot run kill -9 {pid} (in namespace {ns}; is procps installed?): {e}"
        ),
    }
}

#[cfg(test)]
// These tests wait on real processes.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn namespace_names_carry_their_pid() {
        assert_eq!(namespace_pid("sl-ovpn-1234"), Some(1234));
        assert_eq!(namespace_pid("sl-e2e-wan-77"), Some(77));
        assert_eq!(namespace_pid("sl-bdpdklg-5"), Some(5));
        for other in [
            "sl-lab-wan",
            "sl-lab-client1",
            "sl--12",
            "sl-x-",
            "sl-x-0",
            "sl-x-+12",
            "sl-x-99999999999",
            "slx-12",
            "other-x-12",
            "sl-12",
        ] {
            assert_eq!(namespace_pid(other), None, "{other}");
        }
    }

    /// A namespace left by a process that is gone is deleted by the next `Netns::new`.
    #[test]
    fn a_new_namespace_removes_those_of_gone_processes() {
        require_root("a_new_namespace_removes_those_of_gone_processes");
        let mut gone = Command::new("true").spawn().expect("spawn true");
        let pid = gone.id();
        gone.wait().expect("wait");
        let stale = format!("sl-stale-{pid}");
        let out = Command::new("ip")
            .args(["netns", "add", &stale])
            .output()
            .expect("ip");
        assert!(out.status.success(), "ip netns add {stale}: {out:?}");
        let ns = Netns::new("fresh");
        let left = Path::new("/run/netns").join(&stale).exists();
        if left {
            remove_namespace(&stale);
        }
        assert!(!left, "{stale} was left behind");
        assert!(Path::new("/run/netns").join(ns.name()).exists());
    }

    /// The process's state letter (`R`, `S`, `Z`, ...) and parent pid, or `None` once it is gone.
    fn state_and_parent(pid: u32) -> Option<(char, u32)> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        Some((
            field("State:").chars().next()?,
            field("PPid:").parse().ok()?,
        ))
    }

    const HELPER_ENV: &str = "SLUICE_TESTS_PDEATHSIG_PIDFILE";

    /// A helper process (this test binary again) spawns a child with `dying_with_parent` and is
    /// then killed with SIGKILL, so no `Drop` runs: the child must die with it.
    #[test]
    fn a_spawned_child_dies_with_a_killed_test_process() {
        if let Some(pidfile) = std::env::var_os(HELPER_ENV) {
            // The helper: start the child, say its pid, and wait (bounded) to be killed.
            let mut child = dying_with_parent("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep");
            std::fs::write(&pidfile, child.id().to_string()).expect("write pidfile");
            std::thread::sleep(Duration::from_secs(60));
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let mut helper = Reap(
            Command::new(std::env::current_exe().expect("current_exe"))
                .args([
                    "--exact",
                    "tests::a_spawned_child_dies_with_a_killed_test_process",
                    "--test-threads=1",
                ])
                .env(HELPER_ENV, &pidfile)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start the helper"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let grandchild: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.parse().ok())
            {
                break pid;
            }
            assert!(
                helper.0.try_wait().expect("try_wait").is_none(),
                "the helper exited before starting its child"
            );
            assert!(
                Instant::now() < deadline,
                "the helper did not start its child"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Whatever happens below, the grandchild does not outlive this test.
        struct KillPid(u32);
        impl Drop for KillPid {
            fn drop(&mut self) {
                if state_and_parent(self.0).is_some_and(|(s, _)| s != 'Z') {
                    let _ = Command::new("kill")
                        .args(["-9", &self.0.to_string()])
                        .status();
                }
            }
        }
        let _guard = KillPid(grandchild);
        let (state, parent) = state_and_parent(grandchild).expect("the child runs");
        assert_eq!(parent, helper.0.id(), "the child is the helper's");
        assert_ne!(state, 'Z');

        helper.0.kill().expect("SIGKILL the helper");
        helper.0.wait().expect("reap the helper");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some((state, _)) = state_and_parent(grandchild) {
            if state == 'Z' {
                break; // dead, waiting for its new parent to reap it
            }
            assert!(
                Instant::now() < deadline,
                "the helper's child {grandchild} outlived the helper by 10 s (state {state})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
