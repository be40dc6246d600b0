//! A fixed-rate (open-loop) HTTP/1.1 load generator and a fixed-size response server.
//!
//! Open loop: a scheduler thread computes the intended send time of request `i` as
//! `start + i / rate` and hands it to a pool of keep-alive connections; the latency of a
//! request is measured from its *intended* send time, not from when a connection got to it,
//! so a stall shows up in the percentiles instead of silently lowering the rate (no
//! coordinated omission). Percentiles come from an HDR histogram (microseconds, 3 significant
//! digits). Blocking threads are used on purpose: the scheduler's `thread::sleep` is precise
//! to tens of microseconds, where an async timer wheel rounds to a millisecond.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// What to send.
#[derive(Debug, Clone)]
pub struct Spec {
    pub target: SocketAddr,
    /// Requests per second.
    pub rate: u32,
    /// Measured time (after the warm-up).
    pub duration: Duration,
    /// Sent but not measured.
    pub warmup: Duration,
    /// Keep-alive connections (the most requests in flight).
    pub connections: usize,
}

/// Latency figures of one run, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    /// Requests per second actually completed in the measured window.
    pub achieved_rate: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s with 3 significant digits: constant, valid bounds, so this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One GET on a keep-alive connection; reads the whole response.
fn exchange(conn: &mut BufReader<TcpStream>, host: &str) -> std::io::Result<u16> {
    write!(
        conn.get_mut(),
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kuma-xds-load\r\n\r\n"
    )?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body)?;
    Ok(status)
}

/// Runs the load; the figures of the measured window.
pub fn run(spec: &Spec) -> anyhow::Result<Figures> {
    anyhow::ensure!(spec.rate > 0, "the rate must be positive");
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + spec.warmup;
    let host = spec.target.to_string();
    let mut workers = Vec::new();
    for _ in 0..spec.connections.max(1) {
        let rx = rx.clone();
        let target = spec.target;
        let host = host.clone();
        workers.push(std::thread::spawn(move || {
            let mut hist = histogram();
            let mut errors = 0u64;
            let mut conn: Option<BufReader<TcpStream>> = None;
            loop {
                // The lock is held only to take the next job.
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((_, intended)) = job else { break };
                let measured = intended >= measure_from;
                let mut ok = false;
                for _attempt in 0..2 {
                    if conn.is_none() {
                        conn = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                            .and_then(|s| {
                                s.set_nodelay(true)?;
                                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                                Ok(BufReader::new(s))
                            })
                            .ok();
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    match exchange(c, &host) {
                        Ok(200) => {
                            ok = true;
                            break;
                        }
                        Ok(_) => break,
                        Err(_) => conn = None,
                    }
                }
                if measured {
                    if ok {
                        let us = intended.elapsed().as_micros().max(1) as u64;
                        hist.saturating_record(us);
                    } else {
                        errors += 1;
                    }
                }
            }
            (hist, errors)
        }));
    }
    // The scheduler: intended send times at a fixed rate, regardless of completions.
    let period = Duration::from_secs_f64(1.0 / f64::from(spec.rate));
    let total = ((spec.warmup + spec.duration).as_secs_f64() * f64::from(spec.rate)) as u64;
    for i in 0..total {
        let intended = start + period.mul_f64(i as f64);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        if tx.send((i, intended)).is_err() {
            break;
        }
    }
    drop(tx);
    let mut hist = histogram();
    let mut errors = 0;
    for w in workers {
        let (h, e) = w
            .join()
            .map_err(|_| anyhow::anyhow!("a load worker panicked"))?;
        hist.add(&h).context("merging histograms")?;
        errors += e;
    }
    let window = measure_from.elapsed().as_secs_f64();
    Ok(Figures {
        requests: hist.len(),
        errors,
        achieved_rate: hist.len() as f64 / window.max(f64::EPSILON),
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        mean_us: hist.mean(),
    })
}

/// An HTTP/1.1 server answering every request with `body_bytes` bytes (keep-alive), one
/// thread per connection. Stops accepting when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(body_bytes: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the test server")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let response: Arc<Vec<u8>> = Arc::new({
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_bytes}\r\n\r\n"
            )
            .into_bytes();
            r.extend(std::iter::repeat_n(b'x', body_bytes));
            r
        });
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let response = response.clone();
                        std::thread::spawn(move || serve(s, &response));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self { addr, stop })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(s: TcpStream, response: &[u8]) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        // Requests carry no body: a request ends at its blank line.
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => {}
            }
        }
        if w.write_all(response).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_against_local_server() {
        let server = Server::start(1024).unwrap();
        let f = run(&Spec {
            target: server.addr,
            rate: 200,
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(100),
            connections: 4,
        })
        .unwrap();
        assert_eq!(f.errors, 0);
        assert!((90..=110).contains(&f.requests), "{f:?}");
        assert!(f.p50_us > 0 && f.p50_us <= f.p99_us && f.p99_us <= f.max_us);
    }
}
