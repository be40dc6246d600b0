//! Network namespaces for multi-zone tests: one namespace per zone (and one for global),
//! each with one veth into a bridge that also carries an address in the test's namespace, so
//! the test reaches every namespace's address while a zone's loopback (where its proxies'
//! inbounds and workloads listen) stays its own. Created as root; removed on drop.

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

    /// `ip netns exec <ns>`: a launcher running a command in `name`'s namespace.
    pub fn exec(&self, name: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(name)]
    }

    fn cleanup(&self) {
        for n in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .output();
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
