//! Process figures read from `/proc`: resident memory (`VmRSS` of `/proc/<pid>/status`), CPU
//! seconds (`utime + stime` of `/proc/<pid>/stat`), children of a process, and the open-files
//! limit this harness needs for thousands of streams.

use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports them in USER_HZ, which is
/// 100 on every architecture Linux exposes to user space (`sysconf(_SC_CLK_TCK)`).
const CLOCK_TICKS: f64 = 100.0;

/// Failures reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process is gone or `/proc` is unreadable.
    #[error("reading /proc/{pid}: {source}")]
    Read {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    /// The file did not have the expected shape.
    #[error("/proc/{pid}: unexpected format of {file}")]
    Format { pid: u32, file: &'static str },
}

/// A sample of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User + system CPU time, in seconds.
    pub cpu_seconds: f64,
}

impl Sample {
    /// Resident memory in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_bytes as f64 / (1024.0 * 1024.0)
    }
}

fn read(pid: u32, file: &str) -> Result<String, Error> {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join(file))
        .map_err(|source| Error::Read { pid, source })
}

/// `VmRSS` of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let status = read(pid, "status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or(Error::Format {
            pid,
            file: "status",
        })
}

/// `utime + stime` of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = read(pid, "stat")?;
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or(Error::Format { pid, file: "stat" })?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) → indices 11 and 12 here.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => Ok((u + s) as f64 / CLOCK_TICKS),
        _ => Err(Error::Format { pid, file: "stat" }),
    }
}

/// Both figures of a process.
pub fn sample(pid: u32) -> Result<Sample, Error> {
    Ok(Sample {
        rss_bytes: rss_bytes(pid)?,
        cpu_seconds: cpu_seconds(pid)?,
    })
}

/// Parent pid of a process.
fn parent(pid: u32) -> Option<u32> {
    let stat = read(pid, "stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Direct children of `pid` (scans `/proc`, which works without `CONFIG_PROC_CHILDREN`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|c| parent(*c) == Some(pid))
        .collect()
}

/// The first descendant of `pid` whose command name (`/proc/<pid>/comm`) is `name`.
pub fn descendant_named(pid: u32, name: &str) -> Option<u32> {
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for c in children(p) {
            if read(c, "comm").is_ok_and(|comm| comm.trim() == name) {
                return Some(c);
            }
            queue.push(c);
        }
    }
    None
}

/// Raises the soft open-files limit to the hard limit (at least `wanted` when allowed); the
/// limit in force afterwards.
pub fn raise_nofile(wanted: u64) -> u64 {
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else {
        return 0;
    };
    let target = hard.max(soft);
    if soft < target && rlimit::Resource::NOFILE.set(target, hard).is_ok() {
        return target;
    }
    if soft < wanted {
        tracing::warn!(
            soft,
            hard,
            wanted,
            "open-files limit is below what the run needs"
        );
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures() {
        let pid = std::process::id();
        let s = sample(pid).unwrap();
        assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
        assert!(s.cpu_seconds >= 0.0);
        assert!(children(pid).is_empty() || !children(pid).contains(&pid));
    }
}
