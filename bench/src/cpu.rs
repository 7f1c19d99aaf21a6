//! CPU time of this process and of the local nats-server, for `herald bench consume`: user
//! plus system time from `/proc/<pid>/stat` (Linux; elsewhere nothing is measured).

/// `/proc` reports CPU times in USER_HZ ticks, 100 a second on Linux's usual architectures
/// (x86, arm, riscv): a reading is precise to 10 ms.
const TICKS_PER_SECOND: f64 = 100.0;

/// Which processes to measure: this one, and the server when it is ours.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMeter {
    server_pid: Option<u32>,
}

/// CPU ticks used so far by this process and by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    client: Option<u64>,
    server: Option<u64>,
}

/// CPU seconds used between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUsed {
    pub(crate) client: Option<f64>,
    pub(crate) server: Option<f64>,
}

impl CpuMeter {
    /// Measures this process, and the server process `server_pid` if given (a server started
    /// here; a user's server may be elsewhere).
    pub(crate) fn new(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter { server_pid }
    }

    pub(crate) fn sample(self) -> CpuSample {
        CpuSample {
            client: ticks("self"),
            server: self.server_pid.and_then(|pid| ticks(&pid.to_string())),
        }
    }
}

impl CpuSample {
    /// The CPU used from this sample to `later`.
    pub(crate) fn until(self, later: CpuSample) -> CpuUsed {
        let seconds = |before: Option<u64>, after: Option<u64>| {
            Some(after?.saturating_sub(before?) as f64 / TICKS_PER_SECOND)
        };
        CpuUsed {
            client: seconds(self.client, later.client),
            server: seconds(self.server, later.server),
        }
    }
}

/// utime + stime of process `pid` (or `self`), in ticks.
fn ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    // Fields 14 and 15 are utime and stime; the state (field 3) is the first after it.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_on_linux() {
        let meter = CpuMeter::new(Some(std::process::id()));
        let before = meter.sample();
        // Burn a little CPU so that the reading can move (it may still be 0 ticks).
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let used = before.until(meter.sample());
        if cfg!(target_os = "linux") {
            assert!(used.client.is_some_and(|s| s >= 0.0));
            assert!(used.server.is_some());
        }
    }
}
