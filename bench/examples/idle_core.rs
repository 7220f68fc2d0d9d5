//! How often an idle core polls: a core with 1.25 million flow slots and 100,000 session slots,
//! no traffic, polled on the real clock as the appliance polls it, for a few seconds. Prints
//! the polls a second and the time a poll takes. With flow expiry examining a fixed number of
//! slots a poll (64, before 01b764a), each of them a cache line of the table, that rate times
//! 64 lines is what the idle core read from memory; paced by the clock, it reads the table
//! once a lap.
//!
//! `cargo run --release -p sluice-bench --example idle_core`

// A benchmark is a shell: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use sluice_engine::mailbox::Mailbox;
use sluice_engine::port::mem::MemPort;
use sluice_engine::testkit;

const FLOWS: usize = 1_250_000;
const SESSIONS: usize = 100_000;
const SECONDS: u64 = 3;

fn main() {
    let epoch = Instant::now();
    let cfg = testkit::lab_config(FLOWS, SESSIONS);
    let mut w = testkit::lab_worker(
        vec![MemPort::new(), MemPort::new()],
        cfg,
        Mailbox::new(1024),
        epoch,
    );
    let start = Instant::now();
    let mut polls = 0u64;
    while start.elapsed() < Duration::from_secs(SECONDS) {
        for _ in 0..1024 {
            w.poll_once(Instant::now());
        }
        polls += 1024;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = polls as f64 / secs;
    println!(
        "idle core, {FLOWS} flow slots, {SESSIONS} session slots: {:.2} M polls/s, {:.0} ns a poll",
        rate / 1e6,
        1e9 / rate
    );
    println!("stats: {:?}", w.poll_stats());
}
