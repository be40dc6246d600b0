//! `kumactl install transparent-proxy` and `kumactl uninstall transparent-proxy`: resolve the
//! flags against the host, then apply (or print, with `--dry-run`) the rules of
//! [`crate::transparent_proxy`] per IP family.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::cli::{InstallTransparentProxyArgs, IpFamilyMode, UninstallTransparentProxyArgs};
use crate::transparent_proxy::rules::{self, Dns, Family, Plan};
use crate::transparent_proxy::{cleanup, host, iptables};

/// Where the nameservers to redirect are read (`ip netns exec` bind-mounts
/// `/etc/netns/<ns>/resolv.conf` over it).
const RESOLV_CONF: &str = "/etc/resolv.conf";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn root_check(dry_run: bool, err: &mut dyn Write) -> Result<()> {
    if is_root() {
        return Ok(());
    }
    if !dry_run {
        bail!("you need to have root privileges to run this command");
    }
    let _ = writeln!(
        err,
        "# [WARNING] [dry-run]: running this command as a non-root user may lead to unpredictable results"
    );
    Ok(())
}

/// The families to handle: IPv4 always; IPv6 in `dualstack` mode when the host has a
/// non-loopback IPv6 address and ip6tables works (else a note on `err`).
fn families(mode: IpFamilyMode, err: &mut dyn Write) -> Vec<Family> {
    let mut fams = vec![Family::Ipv4];
    if mode == IpFamilyMode::Dualstack {
        match host::has_local_ipv6().and_then(|()| iptables::usable(Family::Ipv6)) {
            Ok(()) => fams.push(Family::Ipv6),
            Err(why) => {
                let _ = writeln!(
                    err,
                    "# [WARNING] [ip6tables]: IPv6 rules skipped, installing IPv4 rules only: {why}"
                );
            }
        }
    }
    fams
}

/// The addresses of `--exclude-*-ips` values (comma separated items, each an address or a
/// CIDR), with their family; Kuma's message for an invalid one.
fn excluded_ips(values: &[String]) -> Result<Vec<(Family, String)>> {
    let mut ips = Vec::new();
    for item in values.iter().flat_map(|v| v.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (addr, prefix) = match item.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (item, None),
        };
        let ip: Option<std::net::IpAddr> = addr.parse().ok();
        let valid_prefix = |ip: &std::net::IpAddr| {
            prefix.is_none_or(|p| {
                p.parse::<u8>()
                    .is_ok_and(|n| n <= if ip.is_ipv4() { 32 } else { 128 })
            })
        };
        match ip.filter(valid_prefix) {
            Some(ip) => {
                let family = if ip.is_ipv4() {
                    Family::Ipv4
                } else {
                    Family::Ipv6
                };
                ips.push((family, item.to_string()));
            }
            None => bail!(
                "invalid exclusion rule: invalid IP address: '{item}'. Expected format: <ip> or <ip>/<cidr> (e.g., 10.0.0.1, 172.16.0.0/16, fe80::1, fe80::/10)"
            ),
        }
    }
    Ok(ips)
}

/// The plan of each family from the flags and the host.
pub fn plans(
    args: &InstallTransparentProxyArgs,
    families: &[Family],
    kuma_dp_uid: u32,
    loopback: &str,
    resolv_conf: &Path,
    err: &mut dyn Write,
) -> Result<Vec<Plan>> {
    let inbound_ips = excluded_ips(&args.exclude_inbound_ips)?;
    let outbound_ips = excluded_ips(&args.exclude_outbound_ips)?;
    let of = |ips: &[(Family, String)], family: Family| -> Vec<String> {
        ips.iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, ip)| ip.clone())
            .collect()
    };
    let servers = if args.redirect_dns {
        host::read_nameservers(resolv_conf)?
    } else {
        Vec::new()
    };
    Ok(families
        .iter()
        .map(|&family| {
            let dns = if args.redirect_all_dns_traffic {
                Dns::All {
                    port: args.redirect_dns_port,
                }
            } else if args.redirect_dns {
                let mine: Vec<_> = servers
                    .iter()
                    .filter(|s| family.contains(s))
                    .copied()
                    .collect();
                if mine.is_empty() {
                    let _ = writeln!(
                        err,
                        "# [WARNING] [{}]: no {} DNS servers found in {}. DNS traffic capture for {} will be disabled",
                        family.iptables(),
                        family.label(),
                        resolv_conf.display(),
                        family.label()
                    );
                    Dns::Off
                } else {
                    Dns::Servers {
                        port: args.redirect_dns_port,
                        servers: mine,
                    }
                }
            } else {
                Dns::Off
            };
            Plan {
                family,
                kuma_dp_uid,
                loopback: loopback.to_string(),
                redirect_inbound: args.redirect_inbound,
                inbound_port: args.redirect_inbound_port,
                exclude_inbound_ports: args.exclude_inbound_ports.0.clone(),
                outbound_port: args.redirect_outbound_port,
                exclude_outbound_ports: args.exclude_outbound_ports.0.clone(),
                exclude_inbound_ips: of(&inbound_ips, family),
                exclude_outbound_ips: of(&outbound_ips, family),
                dns,
                conntrack_zone_split: !args.skip_dns_conntrack_zone_split,
                verbose: args.verbose,
            }
        })
        .collect())
}

/// `kumactl install transparent-proxy`.
pub fn install(
    args: &InstallTransparentProxyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    if args.redirect_dns && args.redirect_all_dns_traffic {
        bail!("only one of '--redirect-dns' or '--redirect-all-dns-traffic' should be specified");
    }
    root_check(args.dry_run, err)?;
    let uid = host::kuma_dp_uid(args.kuma_dp_user.as_deref())?;
    let fams = families(args.ip_family_mode, err);
    let loopback = host::loopback_interface();
    let plans = plans(args, &fams, uid, &loopback, Path::new(RESOLV_CONF), err)?;

    if args.dry_run {
        out.write_all(rules::dry_run(&plans).as_bytes())?;
        // Say so when the real install would be refused (readable as root only).
        for &f in &fams {
            if let Ok(Ok(found)) = iptables::save(f).map(|s| cleanup::find(&s))
                && !found.is_empty()
            {
                let _ = writeln!(
                    err,
                    "# [WARNING] [{}]: transparent proxy is already installed ({}); the install would be refused",
                    f.iptables(),
                    cleanup::describe(&found)
                );
            }
        }
        return Ok(());
    }

    // Refuse before changing anything when any family already has our rules.
    for &f in &fams {
        let found = cleanup::find(&iptables::save(f)?)?;
        if !found.is_empty() {
            bail!(
                "transparent proxy is already installed ({}: {}); run kumactl uninstall transparent-proxy first",
                f.iptables(),
                cleanup::describe(&found)
            );
        }
    }

    writeln!(
        out,
        "# kumactl is about to apply the iptables rules that will enable transparent proxying on the machine. The SSH connection may drop. If that happens, just reconnect again"
    )?;
    let mut applied: Vec<Family> = Vec::new();
    for plan in &plans {
        let mut plan = plan.clone();
        let mut result = apply(&plan, args.wait);
        if let Err(e) = &result
            && plan.conntrack_zone_split
            && plan.dns != Dns::Off
        {
            // Kuma skips zone splitting when the CT target is missing; so do we, once the
            // attempt failed (anything of it that went in is taken out first).
            let _ = remove(plan.family, false, args.wait, &mut std::io::sink());
            let _ = writeln!(
                err,
                "# [WARNING] [{}]: conntrack zone splitting failed ({e:#}); installing without it",
                plan.family.iptables()
            );
            plan.conntrack_zone_split = false;
            result = apply(&plan, args.wait);
        }
        if let Err(e) = result {
            // All or nothing: take back what went in, of this family and the ones before.
            let _ = remove(plan.family, false, args.wait, &mut std::io::sink());
            for &f in &applied {
                if let Err(undo) = remove(f, false, args.wait, &mut *out) {
                    let _ = writeln!(
                        err,
                        "# [WARNING] [{}]: rolling back failed: {undo:#}",
                        f.iptables()
                    );
                }
            }
            return Err(e)
                .with_context(|| format!("unable to restore {} rules", plan.family.iptables()));
        }
        let input = rules::restore_input(&plan);
        applied.push(plan.family);
        let chains = [
            rules::CHAIN_INBOUND,
            rules::CHAIN_OUTBOUND,
            rules::CHAIN_INBOUND_REDIRECT,
            rules::CHAIN_OUTBOUND_REDIRECT,
        ];
        writeln!(
            out,
            "# [{}] installed: {}table nat, chains {}; inbound TCP -> port {}{}, outbound TCP -> port {}, kuma-dp user UID {} not redirected{}",
            plan.family.iptables(),
            if plan.conntrack_zone_split && plan.dns != Dns::Off {
                "table raw (DNS conntrack zones), "
            } else {
                ""
            },
            chains.join(", "),
            plan.inbound_port,
            if plan.redirect_inbound {
                String::new()
            } else {
                " (disabled)".into()
            },
            plan.outbound_port,
            plan.kuma_dp_uid,
            match &plan.dns {
                Dns::Off => String::new(),
                Dns::All { port } => format!(", all DNS -> port {port}"),
                Dns::Servers { port, servers } => format!(
                    ", DNS to {} -> port {port}",
                    servers
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        )?;
        if args.verbose {
            out.write_all(input.as_bytes())?;
        }
    }
    writeln!(
        out,
        "# transparent proxy setup completed successfully. You can now run kuma-dp with the transparent-proxy feature enabled"
    )?;
    Ok(())
}

/// Applies one family's rules (and, for IPv6, the passthrough address on the loopback).
fn apply(plan: &Plan, wait: u32) -> Result<()> {
    if plan.family == Family::Ipv6 {
        host::add_ipv6_passthrough_address(&plan.loopback)?;
    }
    iptables::restore(plan.family, &rules::restore_input(plan), wait)?;
    Ok(())
}

/// Removes (or with `dry_run` prints the removal of) one family's rules, then deletes the
/// tables left empty (see [`cleanup::left_empty`]); whether there were any rules.
fn remove(family: Family, dry_run: bool, wait: u32, out: &mut dyn Write) -> Result<bool> {
    let save = iptables::save(family)?;
    let found = cleanup::find(&save)?;
    if found.is_empty() {
        return Ok(false);
    }
    let input = cleanup::removal_input(&found);
    let empty = cleanup::left_empty(&save, &found);
    if dry_run {
        writeln!(out, "### {} ###", family.label())?;
        out.write_all(input.as_bytes())?;
        for t in &empty {
            writeln!(
                out,
                "# then the empty table {t} is deleted (nf_tables backend)"
            )?;
        }
        return Ok(true);
    }
    iptables::restore(family, &input, wait)
        .with_context(|| format!("removing the {} rules", family.iptables()))?;
    writeln!(
        out,
        "# [{}] removed: {}",
        family.iptables(),
        cleanup::describe(&found)
    )?;
    for t in &empty {
        let deleted = iptables::delete_empty_table(family, t)
            .with_context(|| format!("deleting the empty {} table {t}", family.iptables()))?;
        if deleted {
            writeln!(
                out,
                "# [{}] deleted the table {t}, empty without the transparent proxy rules",
                family.iptables()
            )?;
        }
    }
    Ok(true)
}

/// `kumactl uninstall transparent-proxy`: per family whose tools work, removes our rules and
/// chains; nothing installed is not an error.
pub fn uninstall(
    args: &UninstallTransparentProxyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    root_check(args.dry_run, err)?;
    let mut any = false;
    for family in [Family::Ipv4, Family::Ipv6] {
        // IPv6 is cleaned whenever ip6tables works, whatever the addresses of the host now.
        if family == Family::Ipv6 && iptables::usable(family).is_err() {
            continue;
        }
        if args.verbose && !args.dry_run {
            let found = cleanup::find(&iptables::save(family)?)?;
            out.write_all(cleanup::removal_input(&found).as_bytes())?;
        }
        any |= remove(family, args.dry_run, args.wait, out)?;
    }
    if !any {
        writeln!(
            out,
            "# no transparent proxy rules detected. No cleanup necessary"
        )?;
    } else if !args.dry_run {
        writeln!(out, "# transparent proxy cleanup completed successfully")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> InstallTransparentProxyArgs {
        let argv = ["kumactl", "install", "transparent-proxy"]
            .iter()
            .chain(extra)
            .copied();
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Install {
                what: crate::cli::InstallCommand::TransparentProxy(a),
            } => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dns_servers_go_to_the_plan_of_their_family() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.2\nnameserver fd00::53\n").unwrap();
        let a = args(&["--redirect-dns", "--exclude-outbound-ports", "5432"]);
        let mut err = Vec::new();
        let plans = plans(
            &a,
            &[Family::Ipv4, Family::Ipv6],
            1001,
            "lo",
            &resolv,
            &mut err,
        )
        .unwrap();
        assert_eq!(
            plans[0].dns,
            Dns::Servers {
                port: 15053,
                servers: vec!["10.0.0.2".parse().unwrap()]
            }
        );
        assert_eq!(
            plans[1].dns,
            Dns::Servers {
                port: 15053,
                servers: vec!["fd00::53".parse().unwrap()]
            }
        );
        assert_eq!(plans[1].exclude_outbound_ports, vec![5432]);
        assert_eq!(plans[0].kuma_dp_uid, 1001);
        assert!(err.is_empty());
    }

    #[test]
    fn a_family_without_nameservers_gets_no_dns_rules_and_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.2\n").unwrap();
        let mut err = Vec::new();
        let plans = plans(
            &args(&["--redirect-dns"]),
            &[Family::Ipv4, Family::Ipv6],
            1001,
            "lo",
            &resolv,
            &mut err,
        )
        .unwrap();
        assert_eq!(plans[1].dns, Dns::Off);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.contains("no IPv6 DNS servers found in") && err.contains("will be disabled"),
            "{err}"
        );
        // --redirect-all-dns-traffic needs no nameserver.
        let all = super::plans(
            &args(&["--redirect-all-dns-traffic"]),
            &[Family::Ipv6],
            1001,
            "lo",
            Path::new("/nonexistent/resolv.conf"),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(all[0].dns, Dns::All { port: 15053 });
    }

    #[test]
    fn a_missing_resolv_conf_is_an_error_naming_it() {
        let err = plans(
            &args(&["--redirect-dns"]),
            &[Family::Ipv4],
            1001,
            "lo",
            Path::new("/nonexistent/resolv.conf"),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unable to read file /nonexistent/resolv.conf"),
            "{err:#}"
        );
    }

    #[test]
    fn excluded_ips_go_to_the_plan_of_their_family_and_bad_ones_are_refused() {
        let a = args(&[
            "--exclude-outbound-ips",
            "10.0.0.1,fd00::/8",
            "--exclude-outbound-ips=172.16.0.0/16",
            "--exclude-inbound-ips",
            "fe80::1",
        ]);
        let p = plans(
            &a,
            &[Family::Ipv4, Family::Ipv6],
            1,
            "lo",
            Path::new("/nonexistent"),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(p[0].exclude_outbound_ips, ["10.0.0.1", "172.16.0.0/16"]);
        assert_eq!(p[1].exclude_outbound_ips, ["fd00::/8"]);
        assert!(p[0].exclude_inbound_ips.is_empty());
        assert_eq!(p[1].exclude_inbound_ips, ["fe80::1"]);
        for bad in ["10.0.0.300", "10.0.0.0/33", "fd00::/129", "host.example"] {
            let err = plans(
                &args(&["--exclude-inbound-ips", bad]),
                &[Family::Ipv4],
                1,
                "lo",
                Path::new("/nonexistent"),
                &mut Vec::new(),
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("invalid IP address: '{bad}'")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn both_dns_flags_are_refused() {
        let a = args(&["--redirect-dns", "--redirect-all-dns-traffic", "--dry-run"]);
        let err = install(&a, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "only one of '--redirect-dns' or '--redirect-all-dns-traffic' should be specified"
        );
    }
}
