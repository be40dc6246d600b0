//! `kuma-xds-load cold-memory`: what touching memory costs after the process left it alone for
//! a while. On the project's VM, pages not touched for a few seconds cost microseconds each on
//! the next touch (the host reclaims or tracks them), which makes the first config change after
//! a quiet period slower than the next ones; this measures it independently of kuma-cp.

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Args;

/// Flags of `cold-memory`.
#[derive(Debug, Args, Clone)]
pub struct ColdMemoryArgs {
    /// Size of the buffer touched, MiB.
    #[arg(long, default_value_t = 64)]
    pub mib: usize,
    /// Idle periods to try, seconds (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,5,10")]
    pub idle_secs: Vec<u64>,
}

const PAGE: usize = 4096;

/// Reads one byte per page; the time it took.
fn touch(buf: &[u8]) -> Duration {
    let start = Instant::now();
    let mut sum = 0u64;
    for i in (0..buf.len()).step_by(PAGE) {
        sum = sum.wrapping_add(u64::from(black_box(buf[i])));
    }
    black_box(sum);
    start.elapsed()
}

/// Prints, per idle period, the time to touch every page of a resident buffer right after
/// touching it and after the idle period.
pub async fn run(args: ColdMemoryArgs) -> anyhow::Result<()> {
    // An anonymous mapping of plain 4 KiB pages, as glibc's malloc gets for large blocks
    // (mimalloc, this binary's allocator, may back its segments with huge pages, which hides
    // most of the effect).
    let mut map = memmap2::MmapMut::map_anon(args.mib * 1024 * 1024)?;
    for (i, b) in map.iter_mut().enumerate() {
        *b = i as u8;
    }
    let buf: &[u8] = &map;
    let pages = buf.len() / PAGE;
    println!(
        "{:>8}  {:>14}  {:>14}  {:>12}",
        "idle s", "warm touch ms", "after idle ms", "µs per page"
    );
    for idle in args.idle_secs {
        touch(buf);
        let warm = touch(buf);
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let cold = touch(buf);
        println!(
            "{idle:>8}  {:>14.1}  {:>14.1}  {:>12.2}",
            warm.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e6 / pages as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probe_runs() {
        run(ColdMemoryArgs {
            mib: 1,
            idle_secs: vec![0],
        })
        .await
        .expect("the probe maps, touches and reports");
    }
}
