//! What the install reads from the host: the kuma-dp user, the nameservers of
//! `/etc/resolv.conf`, whether IPv6 is usable, the loopback interface; and the one change it
//! makes outside iptables (as Kuma): the inbound passthrough address `::6/128` on the
//! loopback for IPv6.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use nix::unistd::{Uid, User};

/// Kuma's default kuma-dp uid, tried first when no user is given.
pub const DEFAULT_UID: u32 = 5678;
/// Kuma's default kuma-dp user name, tried next.
pub const DEFAULT_USER: &str = "kuma-dp";

/// Errors of reading the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--kuma-dp-user` names no user of the host (neither a uid nor a name).
    #[error("the specified UID or username ('{0}') does not refer to a valid user on the host")]
    UnknownUser(String),
    /// No `--kuma-dp-user`, and neither uid 5678 nor user `kuma-dp` exists.
    #[error(
        "no UID or username provided, and user with the default UID ('{DEFAULT_UID}') or username ('{DEFAULT_USER}') could not be found"
    )]
    NoDefaultUser,
    /// The user database could not be read.
    #[error("looking up user {user:?}: {source}")]
    Lookup { user: String, source: nix::Error },
    /// The resolv.conf file could not be read.
    #[error("unable to read file {path}: {source}")]
    ResolvConf {
        path: String,
        source: std::io::Error,
    },
    /// `ip -6 addr add ::6/128 dev <lo>` failed.
    #[error("failed to add IPv6 address ::6/128 to the loopback interface {iface}: {detail}")]
    PassthroughAddress { iface: String, detail: String },
}

/// The uid of the user running kuma-dp: `user` as a uid or a name (a uid first, as Kuma),
/// or with none the default uid 5678, then the user `kuma-dp`.
pub fn kuma_dp_uid(user: Option<&str>) -> Result<u32, Error> {
    let lookup = |s: &str| -> Result<Option<u32>, Error> {
        if let Ok(n) = s.parse::<u32>()
            && let Some(u) = User::from_uid(Uid::from_raw(n)).map_err(|source| Error::Lookup {
                user: s.into(),
                source,
            })?
        {
            return Ok(Some(u.uid.as_raw()));
        }
        Ok(User::from_name(s)
            .map_err(|source| Error::Lookup {
                user: s.into(),
                source,
            })?
            .map(|u| u.uid.as_raw()))
    };
    match user.filter(|u| !u.is_empty()) {
        Some(u) => lookup(u)?.ok_or_else(|| Error::UnknownUser(u.into())),
        None => {
            if let Some(uid) = lookup(&DEFAULT_UID.to_string())? {
                return Ok(uid);
            }
            lookup(DEFAULT_USER)?.ok_or(Error::NoDefaultUser)
        }
    }
}

/// The `nameserver` addresses of a resolv.conf text, in order (a `%zone` suffix dropped;
/// lines that are not addresses skipped).
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "nameserver").then_some(())?;
            let addr = f.next()?;
            addr.split('%').next()?.parse().ok()
        })
        .collect()
}

/// The nameservers of the resolv.conf at `path`.
pub fn read_nameservers(path: &Path) -> Result<Vec<IpAddr>, Error> {
    std::fs::read_to_string(path)
        .map(|t| nameservers(&t))
        .map_err(|source| Error::ResolvConf {
            path: path.display().to_string(),
            source,
        })
}

/// Whether the host has an IPv6 address that is not a loopback one (Kuma's condition for
/// IPv6 rules), from `/proc/net/if_inet6`; `Err` says why not.
pub fn has_local_ipv6() -> Result<(), String> {
    let text = std::fs::read_to_string("/proc/net/if_inet6")
        .map_err(|e| format!("IPv6 is not available (/proc/net/if_inet6: {e})"))?;
    let loopback = "00000000000000000000000000000001";
    let any = text.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|addr| addr != loopback)
    });
    if any {
        Ok(())
    } else {
        Err("no local IPv6 addresses detected".into())
    }
}

/// The loopback interface (the one flagged `IFF_LOOPBACK` in `/sys/class/net`), `lo` when
/// none is found.
pub fn loopback_interface() -> String {
    const IFF_LOOPBACK: u32 = 0x8;
    let found = std::fs::read_dir("/sys/class/net").ok().and_then(|dir| {
        dir.flatten().find_map(|e| {
            let flags = std::fs::read_to_string(e.path().join("flags")).ok()?;
            let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
            (flags & IFF_LOOPBACK != 0).then(|| e.file_name().to_string_lossy().into_owned())
        })
    });
    found.unwrap_or_else(|| "lo".into())
}

/// Adds `::6/128` to the loopback interface (Envoy's IPv6 inbound passthrough binds it);
/// already present is fine. Left in place by the uninstall, as Kuma does.
pub fn add_ipv6_passthrough_address(iface: &str) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(["-6", "addr", "add", "::6/128", "dev", iface])
        .output()
        .map_err(|e| Error::PassthroughAddress {
            iface: iface.into(),
            detail: format!("running ip: {e}"),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("File exists") {
        Ok(())
    } else {
        Err(Error::PassthroughAddress {
            iface: iface.into(),
            detail: stderr.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order_by_family() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver   fd00::53\nnameserver bogus\noptions ndots:2\n";
        let got: Vec<String> = nameservers(text).iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["10.0.0.2", "fe80::1", "fd00::53"]);
    }

    #[test]
    fn an_unknown_user_is_an_error_naming_it() {
        let err = kuma_dp_uid(Some("no-such-kuma-dp-user")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the specified UID or username ('no-such-kuma-dp-user') does not refer to a valid user on the host"
        );
        // A uid nobody has is unknown too.
        let err = kuma_dp_uid(Some("4000000001")).unwrap_err();
        assert!(err.to_string().contains("'4000000001'"), "{err}");
    }

    #[test]
    fn a_user_is_found_by_name_or_uid() {
        assert_eq!(kuma_dp_uid(Some("root")).unwrap(), 0);
        assert_eq!(kuma_dp_uid(Some("0")).unwrap(), 0);
    }
}
