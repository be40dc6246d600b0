//! Running the iptables tools of one family: `iptables-save` to read, and
//! `iptables-restore --noflush` to apply a change atomically (each table of the input is one
//! transaction, committed by its `COMMIT`).

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::rules::Family;

/// Errors of running an iptables tool.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tool could not be started (not installed, not on PATH).
    #[error("running {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    /// The tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The output of `iptables-save` (or `ip6tables-save`).
pub fn save(family: Family) -> Result<String, Error> {
    let tool = format!("{}-save", family.iptables());
    let out = Command::new(&tool)
        .output()
        .map_err(|source| Error::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Failed {
            tool,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Seconds `iptables-restore` waits for the xtables lock (Kuma's `--wait` default); the lock
/// only exists with the legacy backend, nf_tables accepts and ignores the flag.
pub const DEFAULT_WAIT: u32 = 5;

/// Feeds `input` to `iptables-restore --noflush` (or `ip6tables-restore`), waiting up to
/// `wait` seconds for the xtables lock (0: not at all).
pub fn restore(family: Family, input: &str, wait: u32) -> Result<(), Error> {
    let tool = format!("{}-restore", family.iptables());
    let spawn_err = |source| Error::Spawn {
        tool: tool.clone(),
        source,
    };
    let mut cmd = Command::new(&tool);
    cmd.arg("--noflush");
    if wait > 0 {
        cmd.arg(format!("--wait={wait}"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows as the tool's failure below (it exited early).
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(Error::Failed {
            tool,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Deletes the empty table `table` of `family` when iptables runs on the nf_tables backend
/// (`nft delete table ip|ip6 <table>`); `Ok(false)` when it cannot be done here (legacy
/// backend, or no `nft`), so the empty table stays.
pub fn delete_empty_table(family: Family, table: &str) -> Result<bool, Error> {
    let version = Command::new(family.iptables()).arg("--version").output();
    let nf_tables = version
        .as_ref()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nf_tables"));
    if !nf_tables {
        return Ok(false);
    }
    let nft_family = match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    };
    let out = match Command::new("nft")
        .args(["delete", "table", nft_family, table])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(Error::Spawn {
                tool: "nft".into(),
                source,
            });
        }
    };
    if !out.status.success() {
        return Err(Error::Failed {
            tool: format!("nft delete table {nft_family} {table}"),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(true)
}

/// Whether the family's tools work here (`-save` runs); `Err` says why not.
pub fn usable(family: Family) -> Result<(), String> {
    save(family).map(|_| ()).map_err(|e| e.to_string())
}
