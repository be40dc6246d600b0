//! Network namespaces for multi-zone tests: one namespace per zone (and one for global),
//! each with one veth into a bridge that also carries an address in the test's namespace, so
//! the test reaches every namespace's address while a zone's loopback (where its proxies'
//! inbounds and workloads listen) stays its own. Created as root; removed on drop.
//!
//! For transparent-proxy tests: a bare [`Namespace`] (its own iptables, loopback and
//! `/etc/netns/<name>/resolv.conf`), namespaces joined by a veth pair ([`Namespace::veth`]),
//! and system users ([`ensure_user`]) to run processes as ([`User::setpriv`]): iptables tells
//! kuma-dp's traffic from the application's by uid.

use std::process::Command;

/// A bridge `<prefix>br` with `10.<net>.0.254/24` and namespaces `<prefix><name>` at
/// `10.<net>.0.<1..>`.
pub struct Topology {
    prefix: String,
    net: u8,
    names: Vec<String>,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (multi-zone tests need root and iproute2)"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Topology {
    /// Creates the bridge and one namespace per name (`prefix` at most 6 characters).
    pub fn new(prefix: &str, net: u8, names: &[&str]) -> Self {
        assert!(
            prefix.len() <= 6,
            "interface names are at most 15 characters"
        );
        let t = Self {
            prefix: prefix.to_string(),
            net,
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        t.cleanup();
        let br = t.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.{net}.0.254/24"),
            "dev",
            &br,
        ]);
        run(&["ip", "link", "set", &br, "up"]);
        for (i, name) in names.iter().enumerate() {
            let ns = t.ns(name);
            let (host, inner) = (format!("{ns}h"), format!("{ns}n"));
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
            ]);
            run(&["ip", "link", "set", &inner, "netns", &ns]);
            run(&["ip", "link", "set", &host, "master", &br, "up"]);
            let ip = format!("10.{net}.0.{}/24", i + 1);
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", &ip, "dev", &inner,
            ]);
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ]);
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        t
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The namespace of `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The address of `name`'s namespace.
    pub fn ip(&self, name: &str) -> String {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .expect("a namespace of this topology");
        format!("10.{}.0.{}", self.net, i + 1)
    }

    /// Runs `args` in `name`'s namespace and returns its output, whatever its exit status.
    pub fn output(&self, name: &str, args: &[&str]) -> std::process::Output {
        output_in(&self.ns(name), args)
    }

    /// Writes `name`'s `/etc/resolv.conf` (removed with the topology).
    pub fn set_resolv_conf(&self, name: &str, text: &str) {
        write_resolv_conf(&self.ns(name), text);
    }

    /// `ip netns exec <ns>`: a launcher running a command in `name`'s namespace.
    pub fn exec(&self, name: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(name)]
    }

    fn cleanup(&self) {
        for n in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .output();
            // A pair left behind by a run that stopped before moving its peer.
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}h", self.ns(n))])
                .output();
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(self.ns(n)));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A network namespace of its own (`ip netns add <name>`, loopback up), with no link to the
/// host; deleted on drop with its `/etc/netns/<name>` directory (the `resolv.conf` that
/// `ip netns exec` bind-mounts over `/etc/resolv.conf`). A leftover of the same name (a test
/// killed earlier) is deleted first.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates the namespace `name`.
    pub fn new(name: &str) -> Self {
        let ns = Self { name: name.into() };
        ns.cleanup();
        run(&["ip", "netns", "add", name]);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name>`: a launcher running a command in the namespace (for
    /// [`crate::launched`]).
    pub fn exec(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Runs `args` in the namespace; panics (with its stderr) when it fails.
    pub fn run(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all);
    }

    /// Runs `args` in the namespace and returns its output, whatever its exit status.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        output_in(&self.name, args)
    }

    /// Writes the namespace's `/etc/resolv.conf` (seen by commands under [`Self::exec`]).
    pub fn set_resolv_conf(&self, text: &str) {
        write_resolv_conf(&self.name, text);
    }

    /// Joins this namespace and `peer` with a veth pair `<link>a` (here) / `<link>b` (there)
    /// (`link` at most 14 characters), both up, with the given addresses (CIDR; IPv6 ones
    /// without duplicate address detection, so they are usable at once).
    pub fn veth(&self, peer: &Namespace, link: &str, here: &[&str], there: &[&str]) {
        assert!(
            link.len() <= 14,
            "interface names are at most 15 characters"
        );
        let (a, b) = (format!("{link}a"), format!("{link}b"));
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["ip", "link", "set", &a, "netns", &self.name]);
        run(&["ip", "link", "set", &b, "netns", &peer.name]);
        for (ns, dev, addrs) in [(self, &a, here), (peer, &b, there)] {
            for addr in addrs {
                if addr.contains(':') {
                    ns.run(&["ip", "-6", "addr", "add", addr, "dev", dev, "nodad"]);
                } else {
                    ns.run(&["ip", "addr", "add", addr, "dev", dev]);
                }
            }
            ns.run(&["ip", "link", "set", dev, "up"]);
        }
    }

    fn cleanup(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
    }
}

/// Runs `args` in namespace `ns` and returns its output, whatever its exit status.
pub fn output_in(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {args:?}: {e}"))
}

/// Writes `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` bind-mounts over
/// `/etc/resolv.conf`; the namespace's owner removes the directory.
fn write_resolv_conf(ns: &str, text: &str) {
    let dir = std::path::Path::new("/etc/netns").join(ns);
    std::fs::create_dir_all(&dir).expect("creating /etc/netns/<ns>");
    std::fs::write(dir.join("resolv.conf"), text).expect("writing the namespace's resolv.conf");
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A user of the host, to run processes as (kuma-dp runs as another user than the
/// application under the transparent proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// `setpriv --reuid=<uid> --regid=<gid> --clear-groups`: a launcher (for
    /// [`crate::launched`], after [`Namespace::exec`] if any) running the command as this
    /// user.
    pub fn setpriv(&self) -> Vec<String> {
        vec![
            "setpriv".into(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".into(),
        ]
    }

    /// `program` run as this user by `launcher` (e.g. [`Namespace::exec`]) then `setpriv`.
    pub fn command(&self, launcher: &[&str], program: impl AsRef<std::ffi::OsStr>) -> Command {
        let setpriv = self.setpriv();
        let all: Vec<&str> = launcher
            .iter()
            .copied()
            .chain(setpriv.iter().map(String::as_str))
            .collect();
        crate::launched(&all, program)
    }
}

fn id_of(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The system user `name`, created when missing (`useradd --system --no-create-home`, shell
/// `nologin`); idempotent, and safe when tests call it at once (a lost creation race is
/// fine). Needs root; panics when the user cannot be had.
pub fn ensure_user(name: &str) -> User {
    if id_of(name, "-u").is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .unwrap_or_else(|e| panic!("useradd {name}: {e} (tests need root and useradd)"));
        if !out.status.success() && id_of(name, "-u").is_none() {
            panic!(
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    match (id_of(name, "-u"), id_of(name, "-g")) {
        (Some(uid), Some(gid)) => User {
            name: name.into(),
            uid,
            gid,
        },
        _ => panic!("user {name} has no uid/gid after useradd"),
    }
}
