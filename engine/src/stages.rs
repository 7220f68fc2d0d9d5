//! Cycles per stage of `Worker::poll_once`, for finding where a packet's time goes when the
//! instruction count (callgrind) does not say: memory stalls. Counted only with the
//! `stage-cycles` feature (`cargo build --release -p sluice-bench --features stage-cycles`);
//! without it every call here compiles to nothing and the counters stay zero.
//!
//! The time-stamp counter is read at each stage boundary. RDTSC does not wait for earlier
//! instructions, so a stall is charged to the stage running when it shows: a prefetch that
//! waits for a free line-fill buffer, for example, is charged to the stage that issues the next
//! one. Compare the same stage across shapes or builds, not stages with each other.
//!
//! With `aead-cycles` as well, the data channel's open and seal calls are timed too
//! (`StageCycles::aead`): the ring call is then counted apart from the rest of the pipeline,
//! at the price of two more RDTSC a packet (about 10-30 ticks). The split leans towards "the
//! rest": the RDTSC after the call runs before ring's last instructions have finished, so the
//! call's tail is charged to the pipeline, the more so the longer the packet. From 64 to 1400
//! B the rest grows by 13 ticks client->net and 57 net->client as timed here, by 7 and 3 with
//! an LFENCE before each stamp (bench/RESULTS.md, fourteenth session). With `aead-fenced` as
//! well, the two stamps around ring's call wait for every earlier instruction: the split is
//! then fair, and the totals higher (the fences stop the overlap of the call with the work
//! around it).

#![cfg_attr(
    all(feature = "stage-cycles", target_arch = "x86_64"),
    allow(unsafe_code)
)]

/// The stages of a poll, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The mailbox and packets handed over by other cores.
    Commands,
    /// Receiving bursts from the ports.
    Receive,
    /// The look-ahead passes over a burst (headers, index lines, hints).
    LookAhead,
    /// Each packet through `process` (decryption, or reverse translation and encryption).
    Process,
    /// The forwarding stage of decrypted packets.
    Forward,
    /// Transmitting every port's batch.
    Transmit,
    /// Freeing dropped buffers, flow expiry, ARP retries, keepalives, reports.
    Housekeeping,
}

impl Stage {
    /// Every stage, in order (`as usize` indexes `StageCycles::cycles`).
    pub const ALL: [Self; 7] = [
        Self::Commands,
        Self::Receive,
        Self::LookAhead,
        Self::Process,
        Self::Forward,
        Self::Transmit,
        Self::Housekeeping,
    ];

    /// A short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Commands => "commands",
            Self::Receive => "receive",
            Self::LookAhead => "look-ahead",
            Self::Process => "process",
            Self::Forward => "forward",
            Self::Transmit => "transmit",
            Self::Housekeeping => "housekeeping",
        }
    }
}

/// Time-stamp counter ticks spent in each stage, and the packets received meanwhile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageCycles {
    /// Ticks per stage, indexed by `Stage as usize`.
    pub cycles: [u64; Stage::ALL.len()],
    /// Of the stages' ticks, those inside the data channel's open and seal calls (the replay
    /// check, the nonce, ring's AEAD), with the `aead-cycles` feature only: what the rest of
    /// the pipeline costs is the total less these.
    pub aead: u64,
    /// Packets received from the ports.
    pub packets: u64,
}

impl StageCycles {
    /// What was counted after `earlier` (a copy taken from the same core).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            cycles: std::array::from_fn(|i| self.cycles[i].saturating_sub(earlier.cycles[i])),
            aead: self.aead.saturating_sub(earlier.aead),
            packets: self.packets.saturating_sub(earlier.packets),
        }
    }

    /// Ticks per received packet, per stage; `None` when no packet was counted (always, without
    /// the `stage-cycles` feature).
    pub fn per_packet(&self) -> Option<[f64; Stage::ALL.len()]> {
        (self.packets > 0).then(|| self.cycles.map(|c| c as f64 / self.packets as f64))
    }

    /// Ticks in the AEAD calls per received packet (see `per_packet`); `None` without the
    /// `aead-cycles` feature.
    pub fn aead_per_packet(&self) -> Option<f64> {
        (cfg!(feature = "aead-cycles") && self.packets > 0)
            .then(|| self.aead as f64 / self.packets as f64)
    }

    /// Charges the ticks since `since` (a `stamp`) to the AEAD calls.
    #[inline(always)]
    pub(crate) fn add_aead(&mut self, since: u64) {
        #[cfg(all(feature = "aead-cycles", target_arch = "x86_64"))]
        {
            self.aead += aead_ticks().wrapping_sub(since);
        }
        #[cfg(not(all(feature = "aead-cycles", target_arch = "x86_64")))]
        let _ = since;
    }

    #[inline(always)]
    pub(crate) fn count_packets(&mut self, n: usize) {
        if cfg!(all(feature = "stage-cycles", target_arch = "x86_64")) {
            self.packets += n as u64;
        }
    }
}

/// A stopwatch over one poll: `lap` charges the ticks since the last lap to a stage.
pub(crate) struct Lap {
    #[cfg(all(feature = "stage-cycles", target_arch = "x86_64"))]
    at: u64,
}

impl Lap {
    #[inline(always)]
    pub(crate) fn start() -> Self {
        Self {
            #[cfg(all(feature = "stage-cycles", target_arch = "x86_64"))]
            at: ticks(),
        }
    }

    #[inline(always)]
    pub(crate) fn lap(&mut self, into: &mut StageCycles, stage: Stage) {
        #[cfg(all(feature = "stage-cycles", target_arch = "x86_64"))]
        {
            let now = ticks();
            into.cycles[stage as usize] += now.wrapping_sub(self.at);
            self.at = now;
        }
        #[cfg(not(all(feature = "stage-cycles", target_arch = "x86_64")))]
        let _ = (into, stage);
    }
}

/// The time-stamp counter now, for `StageCycles::add_aead` (0 without the `aead-cycles`
/// feature).
#[inline(always)]
pub(crate) fn stamp() -> u64 {
    #[cfg(all(feature = "aead-cycles", target_arch = "x86_64"))]
    {
        aead_ticks()
    }
    #[cfg(not(all(feature = "aead-cycles", target_arch = "x86_64")))]
    0
}

/// The counter at an AEAD call's edge: with `aead-fenced`, once every earlier instruction has
/// finished.
#[cfg(all(feature = "aead-cycles", target_arch = "x86_64"))]
#[inline(always)]
fn aead_ticks() -> u64 {
    #[cfg(feature = "aead-fenced")]
    // SAFETY: LFENCE only orders instructions; it touches no memory and every x86_64 CPU
    // with SSE2 has it.
    unsafe {
        core::arch::x86_64::_mm_lfence();
    }
    ticks()
}

#[cfg(all(feature = "stage-cycles", target_arch = "x86_64"))]
#[inline(always)]
fn ticks() -> u64 {
    // SAFETY: RDTSC reads the time-stamp counter into registers; it touches no memory and
    // every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_only_with_the_feature() {
        let mut c = StageCycles::default();
        let mut lap = Lap::start();
        let mut x = 0u64;
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        lap.lap(&mut c, Stage::Process);
        let t = stamp();
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        c.add_aead(t);
        c.count_packets(4);
        if cfg!(all(feature = "stage-cycles", target_arch = "x86_64")) {
            assert!(c.cycles[Stage::Process as usize] > 0);
            assert_eq!(c.packets, 4);
            let per = c.per_packet().unwrap();
            assert_eq!(per[Stage::Process as usize], c.cycles[3] as f64 / 4.0);
            if cfg!(feature = "aead-cycles") {
                assert!(c.aead > 0);
                assert_eq!(c.aead_per_packet(), Some(c.aead as f64 / 4.0));
            } else {
                assert_eq!((c.aead, c.aead_per_packet()), (0, None));
            }
            assert_eq!(c.since(&c), StageCycles::default());
        } else {
            assert_eq!(c, StageCycles::default());
            assert_eq!(c.per_packet(), None);
            assert_eq!(c.aead_per_packet(), None);
        }
    }
}
