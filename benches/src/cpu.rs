//! CPU time of processes from `/proc/PID/stat`, for "CPU per request" in `veil-load`.
//!
//! Fields 14 and 15 of that file (counted from 1, after the command name in parentheses, which
//! may itself hold spaces and parentheses, so parsing starts after the *last* `)`) are
//! `utime` and `stime`: the CPU the process's threads spent in user and kernel mode, in clock
//! ticks of `USER_HZ`, which Linux fixes at 100 per second for this interface on every
//! architecture Veil runs on. Unlike a timing, CPU per request barely moves when other work
//! shares the machine (only through cache and frequency effects), so it compares builds and
//! gives the paper estimate for a larger collector.

use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat`'s times (`USER_HZ`).
const TICKS_PER_SEC: u64 = 100;

/// `utime + stime` from the text of a `/proc/PID/stat` file.
pub fn parse_stat(text: &str) -> Option<Duration> {
    let after = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; utime is field 14, stime field 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

/// CPU time used so far by `pid` (this process for `None`); `None` when it cannot be read.
pub fn read(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// CPU used by each of some processes between [`Meter::start`] and [`Meter::finish`].
#[derive(Debug, Clone)]
pub struct Meter {
    pids: Vec<Option<u32>>,
    at_start: Vec<Option<Duration>>,
}

impl Meter {
    /// Reads every process's CPU time now.
    pub fn start(pids: Vec<Option<u32>>) -> Self {
        let at_start = pids.iter().map(|p| read(*p)).collect();
        Self { pids, at_start }
    }

    /// Each process's CPU time since [`Self::start`], in the same order (`None` where either
    /// reading failed, e.g. a process that exited).
    pub fn finish(self) -> Vec<Option<Duration>> {
        self.pids
            .iter()
            .zip(self.at_start)
            .map(|(p, start)| Some(read(*p)?.saturating_sub(start?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_the_name() {
        // A name with spaces and a ')' in it; utime 250 ticks, stime 50 ticks.
        let line = "4242 (veil (col) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 6 0 \
                    12345 812340000 12030 18446744073709551615";
        assert_eq!(parse_stat(line), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat("4242 (veil) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn this_process_uses_cpu() {
        // Spin until the meter sees 50 ms of CPU (on a busy machine that takes longer than
        // 50 ms of wall time; the deadline only stops a reader that never moves).
        let m = Meter::start(vec![None]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        loop {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let used = m.clone().finish()[0].expect("own /proc/self/stat");
            if used >= Duration::from_millis(50) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no CPU seen: {used:?}"
            );
        }
        std::hint::black_box(x);
    }
}
