//! Target `resolv_conf`: the host's resolv.conf, fed to
//! `kuma_dp::dns::forward::parse_resolv_conf` (the upstreams of the names outside the mesh).
//!
//! Invariants: every server is on port 53, listed once, in the order of the first
//! `nameserver` line naming it; each comes from an uncommented `nameserver <address>` line
//! whose address reads back as the same IP.

use std::net::IpAddr;

use kuma_dp::dns::forward::parse_resolv_conf;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let servers = parse_resolv_conf(&text);
    // The addresses of the `nameserver` lines, comments cut, in order.
    let named: Vec<IpAddr> = text
        .lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?;
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse().ok()
        })
        .collect();
    let mut want: Vec<IpAddr> = Vec::new();
    for ip in named {
        if !want.contains(&ip) {
            want.push(ip);
        }
    }
    assert!(servers.iter().all(|s| s.port() == 53), "{servers:?}");
    let got: Vec<IpAddr> = servers.iter().map(|s| s.ip()).collect();
    assert_eq!(got, want);
}
