//! DPDK with 2 MiB hugepages and `--in-memory`, as on an appliance: the EAL refuses with one
//! clear message when no hugepage is reserved; with pages reserved it starts, its mbufs come
//! from them, and when the process ends every page is free again and no runtime file is left.
//! `nr_hugepages` is restored afterwards, also when the test fails. Each EAL runs in a child
//! process (EAL starts once per process); `harness = false`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::dpdk::{mbuf_from, Eal, EthDev, EthOptions, Mempool};
use sluice_engine::packet::{Burst, DropCounters, PacketBuf};
use sluice_engine::port::Port;
use sluice_tests::require_root;

const NR: &str = "/proc/sys/vm/nr_hugepages";

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Puts `nr_hugepages` back to what it was: explicitly at the end of a passing run (a failure
/// to restore fails the test), or when dropped on a failure (then a loud warning on stderr, the
/// test already failing).
struct RestoreHugepages {
    before: u64,
    done: bool,
}

impl RestoreHugepages {
    /// Writes the old count back and reads it back: the kernel may keep pages it cannot free.
    fn restore(&mut self) -> Result<(), String> {
        self.done = true;
        std::fs::write(NR, self.before.to_string())
            .map_err(|e| format!("writing {} to {NR}: {e}", self.before))?;
        let now = nr_hugepages();
        if now == self.before {
            Ok(())
        } else {
            Err(format!(
                "{NR} is {now} after restoring it to {}: the kernel did not give the pages back \
                 (HugePages_Total {}, HugePages_Free {})",
                self.before,
                meminfo("HugePages_Total:"),
                meminfo("HugePages_Free:")
            ))
        }
    }
}

impl Drop for RestoreHugepages {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.restore() {
                eprintln!("\n**** WARNING: hugepages not restored: {e} ****\n");
            }
        }
    }
}

fn nr_hugepages() -> u64 {
    let text = std::fs::read_to_string(NR).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{NR} holds {text:?}: {e}"))
}

fn eal_args() -> Vec<String> {
    [
        "--no-pci",
        "--in-memory",
        "--no-telemetry",
        "-m",
        "128",
        "-l",
        "0",
        "--log-level=lib.eal:error",
        "--log-level=pmd.*:error",
        "--vdev",
        "net_ring0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn child() -> ! {
    let eal = match Eal::init(&eal_args()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let pool = Arc::new(Mempool::new(&eal, "hp_pool", 8191, 2176, -1).unwrap());
    let used = meminfo("HugePages_Total:") - meminfo("HugePages_Free:");
    assert!(used > 0, "the EAL's memory comes from hugepages");
    let id = eal.require_ports(&["net_ring0"]).unwrap();
    let dev = EthDev::start(id[0], Arc::clone(&pool), EthOptions::default()).unwrap();
    let mut q = dev.queue(0).unwrap();
    let mut b = Burst::new();
    for i in 0..16u8 {
        b.push(mbuf_from(&pool, &[i; 200]).unwrap()).unwrap();
    }
    assert_eq!(q.send(&mut b), 16);
    let mut rx = Burst::new();
    assert_eq!(q.recv(&mut rx, &mut DropCounters::default()), 16);
    assert!(rx
        .as_slice()
        .iter()
        .enumerate()
        .all(|(i, m)| m.data() == [i as u8; 200]));
    drop(rx);
    drop(dev);
    drop(pool);
    drop(eal);
    println!("child: {used} hugepages in use, 16 frames looped back");
    std::process::exit(0);
}

fn run_child() -> (bool, String) {
    let start = Instant::now();
    let mut c = sluice_tests::dying_with_parent(std::env::current_exe().unwrap())
        .env("SLUICE_HP_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if c.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = c.kill();
            panic!("the EAL child hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn main() {
    if std::env::var_os("SLUICE_HP_CHILD").is_some() {
        child();
    }
    require_root("the hugepages test (it sets vm.nr_hugepages)");
    // Pages in use belong to another process (a running DPDK application, a VM): changing
    // nr_hugepages under it is not this test's to do.
    let (total, free) = (meminfo("HugePages_Total:"), meminfo("HugePages_Free:"));
    assert_eq!(
        free,
        total,
        "{} of {total} hugepages are in use by another process; the test would take them away \
         (it sets {NR} to 0). Stop that process or run the test on another machine.",
        total - free
    );
    let mut restore = RestoreHugepages {
        before: nr_hugepages(),
        done: false,
    };

    // No hugepages: one clear refusal, quickly.
    std::fs::write(NR, "0").unwrap();
    let (ok, text) = run_child();
    assert!(!ok, "EAL started without hugepages:\n{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or("");
    assert!(
        line.contains("hugepages"),
        "the refusal names hugepages: {text}"
    );
    println!("dpdk_hugepages: refused: {line}");

    // 128 pages (256 MiB): the EAL runs from them, and gives them all back.
    let before_files = runtime_files();
    std::fs::write(NR, "128").unwrap();
    let total = meminfo("HugePages_Total:");
    assert!(total >= 64, "the kernel reserved only {total} hugepages");
    let (ok, text) = run_child();
    assert!(ok, "EAL with hugepages failed:\n{text}");
    print!("  {text}");
    assert_eq!(
        meminfo("HugePages_Free:"),
        meminfo("HugePages_Total:"),
        "every hugepage is free after the process ended"
    );
    // EAL may create its (empty) runtime directory; the run may leave no file in it or in a
    // hugetlbfs mount (files other processes left before are not ours to judge).
    let leftovers: Vec<_> = runtime_files()
        .into_iter()
        .filter(|p| !before_files.contains(p))
        .collect();
    assert!(leftovers.is_empty(), "runtime files left: {leftovers:?}");
    restore
        .restore()
        .unwrap_or_else(|e| panic!("hugepages not restored: {e}"));
    println!("dpdk_hugepages: ok ({total} pages reserved, all free afterwards, no runtime files)");
}

fn runtime_files() -> Vec<std::path::PathBuf> {
    ["/dev/hugepages", "/var/run/dpdk/rte"]
        .iter()
        .filter_map(|d| std::fs::read_dir(Path::new(d)).ok())
        .flat_map(|r| r.filter_map(Result::ok).map(|e| e.path()))
        .collect()
}
