//! Resident memory of the collectors during a run, read from Linux's `/proc/PID/status`.
//!
//! Three lines of that file matter (values in kB): `VmRSS`, the resident set now, `VmHWM`, its
//! peak since the process started ("high water mark"), and `RssAnon`, the anonymous part of
//! `VmRSS` (heap and stacks, without mapped files such as the binary itself; Linux 4.5+). A [`Sampler`] reads `VmRSS` of each
//! watched process every few tens of milliseconds while a scenario runs and keeps the largest
//! value it saw, then reads `VmHWM` once at the end. For a `veil collector` process both are
//! the collector's own; for in-process collectors the only process there is is `veil-load`
//! itself (`/proc/self/status`), so the numbers also hold the load generator, the bare server
//! and every in-process collector together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Memory figures of one process, kB.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mem {
    /// `VmRSS`: resident now.
    pub rss_kb: u64,
    /// `VmHWM`: the peak resident set since the process started.
    pub hwm_kb: u64,
    /// `RssAnon`: the anonymous part of `VmRSS` (0 when the kernel does not say).
    pub anon_kb: u64,
}

/// `VmRSS` and `VmHWM` from the text of a `/proc/PID/status` file; `None` when either is
/// missing (a kernel thread, a process that has exited, not Linux).
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let n = parts.next()?.parse::<u64>().ok()?;
            match parts.next() {
                Some("kB") | None => Some(n),
                _ => None,
            }
        })
    };
    Some(Mem {
        rss_kb: field("VmRSS")?,
        hwm_kb: field("VmHWM")?,
        anon_kb: field("RssAnon").unwrap_or(0),
    })
}

/// The memory of process `pid`, or of this process when `None`.
pub fn read(pid: Option<u32>) -> Option<Mem> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    parse_status(&std::fs::read_to_string(path).ok()?)
}

/// What a [`Sampler`] saw of one process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Peak {
    /// The largest `VmRSS` sampled, kB (0 when it could never be read).
    pub max_rss_kb: u64,
    /// `VmHWM` when sampling stopped, kB (0 when it could not be read).
    pub hwm_kb: u64,
    /// The largest `RssAnon` sampled, kB.
    pub max_anon_kb: u64,
    /// `VmRSS` when sampling stopped, kB.
    pub last_rss_kb: u64,
    /// How many samples were read.
    pub samples: u64,
}

/// Samples the resident memory of some processes on its own thread until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Peak>>,
}

impl Sampler {
    /// Starts sampling `pids` (`None` = this process) every `every`.
    pub fn start(pids: Vec<Option<u32>>, every: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("veil-load-rss".into())
            .spawn(move || {
                let mut peaks = vec![Peak::default(); pids.len()];
                loop {
                    let last = stopping.load(Ordering::Relaxed);
                    for (pid, peak) in pids.iter().zip(peaks.iter_mut()) {
                        if let Some(m) = read(*pid) {
                            peak.max_rss_kb = peak.max_rss_kb.max(m.rss_kb);
                            peak.hwm_kb = m.hwm_kb;
                            peak.max_anon_kb = peak.max_anon_kb.max(m.anon_kb);
                            peak.last_rss_kb = m.rss_kb;
                            peak.samples += 1;
                        }
                    }
                    if last {
                        return peaks;
                    }
                    std::thread::sleep(every);
                }
            })?;
        Ok(Self { stop, handle })
    }

    /// Takes one last sample and returns each process's figures, in the order given.
    pub fn finish(self) -> Vec<Peak> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// kB as MB (10^6 bytes), for tables.
pub fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak_from_proc_status() {
        let text = "Name:\tveil\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  812344 kB\n\
                    VmSize:\t  812340 kB\nVmHWM:\t   61236 kB\nVmRSS:\t   48120 kB\n\
                    RssAnon:\t   30000 kB\nThreads:\t9\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                rss_kb: 48_120,
                hwm_kb: 61_236,
                anon_kb: 30_000,
            })
        );
        // `VmRSSx` is not `VmRSS`; a kernel thread has neither line.
        assert_eq!(parse_status("VmRSSx:\t1 kB\nVmHWM:\t2 kB\n"), None);
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), None);
        assert_eq!(parse_status("VmRSS:\tlots kB\nVmHWM:\t2 kB\n"), None);
        assert_eq!(parse_status("VmRSS:\t5 MB\nVmHWM:\t2 kB\n"), None);
        // An old kernel without RssAnon still gives the other two.
        assert_eq!(
            parse_status("VmRSS:\t5 kB\nVmHWM:\t6 kB\n").map(|m| m.anon_kb),
            Some(0)
        );
    }

    #[test]
    fn samples_this_process() {
        let own = read(None).expect("Linux /proc/self/status");
        assert!(own.rss_kb > 0 && own.hwm_kb >= own.rss_kb);
        assert!(own.anon_kb > 0 && own.anon_kb <= own.rss_kb);
        let s = Sampler::start(vec![None, Some(u32::MAX)], Duration::from_millis(5)).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let peaks = s.finish();
        // At least the last sample, taken by finish() whatever the thread's timing.
        assert!(peaks[0].samples >= 1 && peaks[0].max_rss_kb > 0 && peaks[0].hwm_kb > 0);
        // A process that does not exist is never read.
        assert_eq!(peaks[1], Peak::default());
        assert!((mb(1000) - 1.024).abs() < 1e-9);
    }
}
