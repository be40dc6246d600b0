//! Changes to a running mesh under steady traffic, with real Envoy: every change a user makes
//! (mTLS on, mode, CA switch, protocol, a new outbound, a permission, replicas coming and
//! going, mTLS off, a rolling restart) must lose no request, show on the wire within a second,
//! and leave no Envoy warming a resource until its initial fetch timeout or rejecting an
//! update.
//!
//! A client thread sends requests through the frontend's outbounds every 20 ms the whole
//! time and counts every request and every failure (non-200 or transport error) per step:
//! - an HTTP GET through the outbound to `backend` (HTTP), carried between the proxies over
//!   a pooled HTTP/2 connection;
//! - the same GET through the outbound to `backend-tcp` (a TCP inbound of the same replicas,
//!   in front of the same workload): every request is a new connection between the proxies,
//!   a new mTLS handshake with mTLS on, so a trust problem cannot hide behind a pooled
//!   connection.
//!
//! Every step's figures are printed (`eprintln`) as a table row when the step ends, and the
//! whole table again at the end; the test then fails listing every violated bound, so one
//! run shows the figures of all steps.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{Value, json};

/// Traffic before each change (counted in the step).
const STEP_LEAD: Duration = Duration::from_millis(500);
/// Traffic after the change became visible (counted in the step).
const STEP_TAIL: Duration = Duration::from_secs(2);
/// A change must be visible on the wire within this long of its API call.
const VISIBLE_BOUND: Duration = Duration::from_secs(1);
/// How long a step waits for its change before giving up (longer than Envoy's 15 s initial
/// fetch timeout, so a resource kept warming shows as ~15 s in the figures).
const VISIBLE_WAIT: Duration = Duration::from_secs(20);
/// Pause between two rounds of the client.
const CLIENT_PAUSE: Duration = Duration::from_millis(20);
/// Fewer requests than this per probe and step means the client was not running.
const MIN_REQUESTS: u64 = 20;

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// What one probe of the client saw during one step.
#[derive(Debug, Default, Clone)]
struct Tally {
    requests: u64,
    failures: u64,
    /// Answers per replica (the body is the serving workload's name).
    answers: BTreeMap<String, u64>,
    /// The first failures, with their time since the client started.
    errors: Vec<String>,
}

/// The client thread: one request through each probe (name, local outbound port) per round.
struct Load {
    probes: Vec<(&'static str, u16)>,
    step: Arc<AtomicUsize>,
    tallies: Arc<Mutex<Vec<Vec<Tally>>>>,
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(probes: Vec<(&'static str, u16)>) -> Self {
        let step = Arc::new(AtomicUsize::new(0));
        let tallies = Arc::new(Mutex::new(vec![vec![Tally::default(); probes.len()]]));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (probes, step, tallies, stop) =
                (probes.clone(), step.clone(), tallies.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (k, (name, port)) in probes.iter().enumerate() {
                        let i = step.load(Ordering::Relaxed);
                        let result = http_probe(*port);
                        let at = started.elapsed().as_secs_f64();
                        let mut all = tallies.lock().unwrap_or_else(|e| e.into_inner());
                        let t = &mut all[i][k];
                        t.requests += 1;
                        let error = match result {
                            Ok((200, body)) => {
                                *t.answers.entry(body).or_default() += 1;
                                None
                            }
                            Ok((code, body)) => Some(format!("status {code}: {body}")),
                            Err(e) => Some(format!("{e:#}")),
                        };
                        if let Some(e) = error {
                            t.failures += 1;
                            if t.errors.len() < 5 {
                                t.errors.push(format!("t={at:.3}s {name}: {e}"));
                            }
                        }
                    }
                    std::thread::sleep(CLIENT_PAUSE);
                }
            })
        };
        Self {
            probes,
            step,
            tallies,
            started,
            stop,
            thread: Some(thread),
        }
    }

    /// Counts from now on into a new step; its index.
    fn begin(&self) -> usize {
        let mut all = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        all.push(vec![Tally::default(); self.probes.len()]);
        let i = all.len() - 1;
        self.step.store(i, Ordering::Relaxed);
        i
    }

    fn tally(&self, step: usize) -> Vec<Tally> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())[step].clone()
    }

    /// Answers from `replica` to every probe in the current step (the smallest count).
    fn answers_now(&self, replica: &str) -> u64 {
        let i = self.step.load(Ordering::Relaxed);
        self.tally(i)
            .iter()
            .map(|t| t.answers.get(replica).copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    /// Seconds since the client started (the time base of the recorded failures).
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Steps and their figures
// ---------------------------------------------------------------------------------------------

struct Row {
    step: String,
    tallies: Vec<Tally>,
    visible: Option<Duration>,
    trouble: u64,
    note: String,
}

/// The steps of a scenario: figures per step, and every bound a step violated.
struct Steps<'a> {
    load: &'a Load,
    rows: Vec<Row>,
    violations: Vec<String>,
}

impl<'a> Steps<'a> {
    fn new(load: &'a Load) -> Self {
        eprintln!("{}", header(&load.probes));
        Self {
            load,
            rows: vec![],
            violations: vec![],
        }
    }

    /// Starts a step: the client counts into it from now on, for [`STEP_LEAD`] before the
    /// change is made.
    fn begin(&self) -> usize {
        let i = self.load.begin();
        std::thread::sleep(STEP_LEAD);
        i
    }

    /// Ends a step [`STEP_TAIL`] after its change became visible, checks its bounds and
    /// prints its row. `bound`: how soon the change must have been visible (`None`: within
    /// [`VISIBLE_WAIT`]); `expected` are the replicas that must have answered every probe;
    /// `trouble` adds xDS trouble counters read from Envoys that are gone by now.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        step: usize,
        name: &str,
        (visible, bound): (Option<Duration>, Option<Duration>),
        envoys: &[&DataplaneProc],
        expected: &[&str],
        trouble: u64,
        note: String,
    ) {
        std::thread::sleep(STEP_TAIL);
        let mut total = trouble;
        for e in envoys {
            match e.xds_trouble() {
                Some(n) => total += n,
                None => self.violations.push(format!(
                    "{name}: the admin API of {} did not answer",
                    e.name
                )),
            }
        }
        let tallies = self.load.tally(step);
        for ((probe, _), t) in self.load.probes.iter().zip(&tallies) {
            if t.requests < MIN_REQUESTS {
                self.violations.push(format!(
                    "{name}: only {} {probe} requests were made",
                    t.requests
                ));
            }
            if t.failures > 0 {
                self.violations.push(format!(
                    "{name}: {} of {} {probe} requests failed, first: {:?}",
                    t.failures, t.requests, t.errors
                ));
            }
            for r in expected {
                if !t.answers.contains_key(*r) {
                    self.violations
                        .push(format!("{name}: {r} never answered the {probe} requests"));
                }
            }
        }
        match visible {
            None => self.violations.push(format!(
                "{name}: the change was not visible (with no Envoy warming) within {VISIBLE_WAIT:?}"
            )),
            Some(d) if bound.is_some_and(|b| d > b) => self.violations.push(format!(
                "{name}: the change took {d:?} to be visible (with no Envoy warming), bound {bound:?}"
            )),
            Some(_) => {}
        }
        if total > 0 {
            self.violations.push(format!(
                "{name}: the sum of *.init_fetch_timeout and *.update_rejected over every Envoy is {total}"
            ));
        }
        let row = Row {
            step: name.to_string(),
            tallies,
            visible,
            trouble: total,
            note,
        };
        eprintln!("{}", format_row(&row));
        self.rows.push(row);
    }

    /// Prints the table and fails on any violation.
    fn conclude(self, title: &str) {
        eprintln!("\n===== {title} =====\n{}", header(&self.load.probes));
        for r in &self.rows {
            eprintln!("{}", format_row(r));
        }
        if !self.violations.is_empty() {
            eprintln!("violations:");
            for v in &self.violations {
                eprintln!("  - {v}");
            }
        }
        assert!(
            self.violations.is_empty(),
            "{title}: {} violation(s):\n{}",
            self.violations.len(),
            self.violations.join("\n")
        );
    }
}

fn header(probes: &[(&'static str, u16)]) -> String {
    let mut h = format!("{:<44}", "step");
    for (p, _) in probes {
        h.push_str(&format!(" | {:>4} req/fail", p));
    }
    h.push_str(" | visible  | xds trouble | answers / notes");
    h
}

fn format_row(r: &Row) -> String {
    let mut s = format!("{:<44}", r.step);
    for t in &r.tallies {
        s.push_str(&format!(" | {:>8}/{:<4}", t.requests, t.failures));
    }
    let visible = r
        .visible
        .map_or("never".to_string(), |d| format!("{:.3}s", d.as_secs_f64()));
    let answers: Vec<String> = r
        .tallies
        .first()
        .map(|t| t.answers.iter().map(|(k, v)| format!("{k}:{v}")).collect())
        .unwrap_or_default();
    s.push_str(&format!(
        " | {visible:<8} | {:>11} | {} {}",
        r.trouble,
        answers.join(" "),
        r.note
    ));
    for t in &r.tallies {
        for e in &t.errors {
            s.push_str(&format!("\n      failure {e}"));
        }
    }
    s
}

/// Whether no Envoy is warming anything (every update it got is in use).
fn settled(envoys: &[&DataplaneProc]) -> bool {
    envoys.iter().all(|e| e.warming() == Some(0))
}

/// Polls `cond` (and that no Envoy of `envoys` is warming) until it holds; how long after
/// `since` it did, or `None` after [`VISIBLE_WAIT`].
fn visible_after(
    since: Instant,
    envoys: &[&DataplaneProc],
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    while since.elapsed() < VISIBLE_WAIT {
        if cond() && settled(envoys) {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The mesh
// ---------------------------------------------------------------------------------------------

/// A replica of `backend`: its workload, and its proxy with an HTTP inbound (service
/// `backend`) and a TCP inbound (service `backend-tcp`) in front of that workload.
struct Replica {
    name: String,
    http_in: u16,
    tcp_in: u16,
    app: Workload,
    dp: Option<DataplaneProc>,
}

impl Replica {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            http_in: free_port(),
            tcp_in: free_port(),
            app: Workload::http(name),
            dp: None,
        }
    }

    /// Starts (again) its kuma-dp and Envoy, with the same name and ports.
    fn start(&mut self, cp: &ControlPlane, dir: &Path) {
        self.dp = Some(DataplaneProc::start(
            cp,
            &DpSpec {
                name: &self.name,
                inbounds: vec![
                    (self.http_in, self.app.port, "backend", "http"),
                    (self.tcp_in, self.app.port, "backend-tcp", "tcp"),
                ],
                ..Default::default()
            },
            dir,
        ));
    }

    fn dp(&self) -> &DataplaneProc {
        self.dp.as_ref().expect("replica running")
    }

    fn dp_mut(&mut self) -> &mut DataplaneProc {
        self.dp.as_mut().expect("replica running")
    }

    fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_in)
    }

    fn tcp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.tcp_in)
    }
}

/// A proxy with one HTTP inbound (service `service`, on `inbound`) in front of its own
/// workload, and `outbounds`.
fn proxy(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    (service, inbound): (&str, u16),
    app: &Workload,
    outbounds: Vec<(u16, &str)>,
) -> DataplaneProc {
    DataplaneProc::start(
        cp,
        &DpSpec {
            name,
            inbounds: vec![(inbound, app.port, service, "http")],
            outbounds,
            ..Default::default()
        },
        dir,
    )
}

fn put_mtp(cp: &ControlPlane, name: &str, from: Value, action: &str) {
    let mtp = json!({"type": "MeshTrafficPermission", "mesh": "default", "name": name,
        "spec": {"targetRef": {"kind": "Mesh"}, "from": [{"targetRef": from, "default": {"action": action}}]}});
    let (code, body) = cp.put(
        &format!("/meshes/default/meshtrafficpermissions/{name}"),
        &mtp,
    );
    assert!(code == 200 || code == 201, "{code} {body}");
}

/// The Mesh `default`: mTLS off (`None`), or on with the builtin backends `ca-1` (in
/// `ca1_mode`) and `ca-2` (STRICT), `enabled` selecting one.
fn put_mesh(cp: &ControlPlane, enabled: Option<&str>, ca1_mode: &str) {
    let mesh = match enabled {
        None => json!({"type": "Mesh", "name": "default"}),
        Some(b) => json!({"type": "Mesh", "name": "default", "mtls": {"enabledBackend": b,
            "backends": [
                {"name": "ca-1", "type": "builtin", "mode": ca1_mode},
                {"name": "ca-2", "type": "builtin", "mode": "STRICT"}]}}),
    };
    let (code, body) = cp.put("/meshes/default", &mesh);
    assert!(code == 200 || code == 201, "PUT mesh {mesh}: {code} {body}");
}

/// Changes a Dataplane the way `kumactl apply -f` does: read it, edit it, PUT it back.
fn edit_dataplane(cp: &ControlPlane, name: &str, edit: impl FnOnce(&mut Value)) {
    let path = format!("/meshes/default/dataplanes/{name}");
    let (code, mut dp) = cp.get(&path);
    assert_eq!(code, 200, "GET {path}: {dp}");
    if let Some(o) = dp.as_object_mut() {
        o.remove("creationTime");
        o.remove("modificationTime");
    }
    edit(&mut dp);
    let (code, body) = cp.put(&path, &dp);
    assert!(code == 200 || code == 201, "PUT {path} {dp}: {code} {body}");
}

/// The `kuma.io/protocol` tag of the inbound of `service` on Dataplane `name` set to `proto`.
fn set_protocol(cp: &ControlPlane, name: &str, service: &str, proto: &str) {
    edit_dataplane(cp, name, |dp| {
        let inbounds = dp["networking"]["inbound"]
            .as_array_mut()
            .expect("inbounds");
        let mut changed = 0;
        for i in inbounds {
            if i["tags"]["kuma.io/service"] == service {
                i["tags"]["kuma.io/protocol"] = json!(proto);
                changed += 1;
            }
        }
        assert_eq!(changed, 1, "one inbound of {service} on {name}");
    });
}

/// The served certificate on `port` has the mesh identity of `service` and is signed by
/// `root`.
fn serves_identity(port: u16, service: &str, root: &str) -> bool {
    served_cert(port).is_some_and(|leaf| {
        cert_sans(&leaf).contains(&format!("URI:spiffe://default/{service}"))
            && signed_by(&leaf, root)
    })
}

/// A plaintext HTTP GET to `127.0.0.1:port` (an outbound, or straight to an inbound) is
/// answered with 200.
fn answers_200(port: u16) -> bool {
    matches!(http_probe(port), Ok((200, _)))
}

fn json_has(v: Option<Value>, needle: &str) -> bool {
    v.is_some_and(|v| v.to_string().contains(needle))
}

const TLS: &str = "UpstreamTlsContext";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HCM: &str = "http_connection_manager.v3.HttpConnectionManager";

/// Waits until `proxy` has `n` healthy endpoints in each of `clusters`.
fn wait_endpoints(proxy: &DataplaneProc, clusters: &[&str], n: usize) {
    wait_for(
        &format!("{} to see {n} endpoints of {clusters:?}", proxy.name),
        Duration::from_secs(30),
        || {
            clusters
                .iter()
                .all(|c| proxy.healthy_endpoints(c).len() == n)
                .then_some(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn change_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(&d.join("cp"), &[]);
    // In force once mTLS is on (without a permission everything would be denied).
    put_mtp(&cp, "allow-all", json!({"kind": "Mesh"}), "Allow");

    let mut b1 = Replica::new("backend-1");
    let mut b2 = Replica::new("backend-2");
    b1.start(&cp, d);
    b2.start(&cp, d);
    let (fw, xw, c2w) = (
        Workload::http("frontend"),
        Workload::http("extra"),
        Workload::http("client2"),
    );
    let extra = proxy(&cp, d, "extra-1", ("extra", free_port()), &xw, vec![]);
    let (out_http, out_tcp, out_extra, c2_out) =
        (free_port(), free_port(), free_port(), free_port());
    let front_in = free_port();
    let front = proxy(
        &cp,
        d,
        "frontend",
        ("frontend", front_in),
        &fw,
        vec![(out_http, "backend"), (out_tcp, "backend-tcp")],
    );
    let client2 = proxy(
        &cp,
        d,
        "client2",
        ("client2", free_port()),
        &c2w,
        vec![(c2_out, "backend")],
    );
    DataplaneProc::wait_live(&[b1.dp(), b2.dp(), &extra, &front, &client2]);
    wait_endpoints(&front, &["backend", "backend-tcp"], 2);
    wait_endpoints(&client2, &["backend"], 2);
    wait_for(
        "traffic through the frontend",
        Duration::from_secs(20),
        || (answers_200(out_http) && answers_200(out_tcp)).then_some(()),
    );
    assert_eq!(http_probe(c2_out).unwrap().0, 200, "client2 allowed");
    assert!(
        http_probe(out_extra).is_err(),
        "nothing listens on the frontend's future outbound to extra yet"
    );

    let load = Load::start(vec![("http", out_http), ("tcp", out_tcp)]);
    let mut steps = Steps::new(&load);
    let both = ["backend-1", "backend-2"];

    // Baseline: nothing changes (the client and the bounds on a quiet mesh).
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let s = steps.begin();
        let t0 = Instant::now();
        let v = visible_after(t0, &envoys, || true);
        steps.finish(
            s,
            "0 baseline, mTLS off",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            String::new(),
        );
    }

    // (a) mTLS on, PERMISSIVE, builtin ca-1 (ca-2 defined too, not enabled).
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let s = steps.begin();
        let t0 = Instant::now();
        put_mesh(&cp, Some("ca-1"), "PERMISSIVE");
        let v = visible_after(t0, &envoys, || {
            let Some(ca1) = cp.builtin_root("default", "ca-1") else {
                return false;
            };
            json_has(front.active_cluster("backend"), TLS)
                && json_has(front.active_cluster("backend-tcp"), TLS)
                && serves_identity(b1.http_in, "backend", &ca1)
                && serves_identity(b2.http_in, "backend", &ca1)
        });
        steps.finish(
            s,
            "a mTLS on, PERMISSIVE (ca-1)",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            "visible: backends serve a ca-1 identity, frontend clusters use TLS".into(),
        );
    }

    // (b) PERMISSIVE -> STRICT: the inbounds stop admitting plaintext.
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let s = steps.begin();
        let t0 = Instant::now();
        put_mesh(&cp, Some("ca-1"), "STRICT");
        let v = visible_after(t0, &envoys, || {
            [b1.http_in, b1.tcp_in, b2.http_in, b2.tcp_in]
                .iter()
                .all(|p| !answers_200(*p))
        });
        steps.finish(
            s,
            "b PERMISSIVE -> STRICT",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            "visible: plaintext to the 4 backend inbounds refused".into(),
        );
    }

    // (c) CA switch ca-1 -> ca-2 (both builtin backends in the Mesh, enabledBackend changes).
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let ca2 = wait_for("root of ca-2", Duration::from_secs(10), || {
            cp.builtin_root("default", "ca-2")
        });
        let s = steps.begin();
        let t0 = Instant::now();
        put_mesh(&cp, Some("ca-2"), "STRICT");
        let v = visible_after(t0, &envoys, || {
            serves_identity(b1.http_in, "backend", &ca2)
                && serves_identity(b2.http_in, "backend", &ca2)
                && serves_identity(front_in, "frontend", &ca2)
        });
        steps.finish(
            s,
            "c CA switch ca-1 -> ca-2",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            "visible: backends and frontend serve ca-2 identities".into(),
        );
    }

    // (d) The protocol of `backend` http -> tcp, then back: a user edits the Dataplanes
    // (`kumactl apply -f`, here the same PUT through the API) of both replicas. The proxies
    // keep running: their kuma-dp registered them from a file, the API write changes the
    // stored Dataplane the CP generates from.
    for (from, to, tag, name) in [
        (
            "http",
            "tcp",
            TCP_PROXY,
            "d1 protocol of backend http -> tcp",
        ),
        ("tcp", "http", HCM, "d2 protocol of backend tcp -> http"),
    ] {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let s = steps.begin();
        let t0 = Instant::now();
        set_protocol(&cp, "backend-1", "backend", to);
        set_protocol(&cp, "backend-2", "backend", to);
        let v = visible_after(t0, &envoys, || {
            let only = |l: Option<Value>| {
                let text = l.map(|l| l.to_string()).unwrap_or_default();
                text.contains(tag) && !text.contains(if to == "tcp" { HCM } else { TCP_PROXY })
            };
            only(b1.dp().active_listener(b1.http_in))
                && only(b2.dp().active_listener(b2.http_in))
                && only(front.active_listener(out_http))
        });
        steps.finish(
            s,
            name,
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            format!("visible: backend inbounds and frontend outbound carry {to} ({from} before)"),
        );
    }

    // (e) A new outbound on the frontend, to `extra`, starts working.
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let s = steps.begin();
        let t0 = Instant::now();
        edit_dataplane(&cp, "frontend", |dp| {
            dp["networking"]["outbound"]
                .as_array_mut()
                .expect("outbounds")
                .push(json!({"port": out_extra, "tags": {"kuma.io/service": "extra"}}));
        });
        let v = visible_after(
            t0,
            &envoys,
            || matches!(http_probe(out_extra), Ok((200, ref b)) if b == "extra"),
        );
        steps.finish(
            s,
            "e new outbound frontend -> extra",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            "visible: the new outbound answers".into(),
        );
    }

    // (f) A permission change: client2 denied, the frontend still allowed.
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        assert_eq!(http_probe(c2_out).unwrap().0, 200, "client2 allowed before");
        let s = steps.begin();
        let t0 = Instant::now();
        put_mtp(
            &cp,
            "deny-client2",
            json!({"kind": "MeshService", "name": "client2"}),
            "Deny",
        );
        // Both replicas deny: four 403 in a row (round robin over the two).
        let mut denied_in_a_row = 0;
        let v = visible_after(t0, &envoys, || {
            if matches!(http_probe(c2_out), Ok((403, _))) {
                denied_in_a_row += 1;
            } else {
                denied_in_a_row = 0;
            }
            denied_in_a_row >= 4
        });
        steps.finish(
            s,
            "f permission: client2 denied",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            "visible: client2 gets 403 from both replicas".into(),
        );
    }

    // (g) A third replica joins and receives traffic, then leaves (SIGTERM to its kuma-dp).
    let mut b3 = Replica::new("backend-3");
    {
        let s = steps.begin();
        let started = Instant::now();
        b3.start(&cp, d);
        DataplaneProc::wait_live(&[b3.dp()]);
        let live = Instant::now();
        let envoys = [b1.dp(), b2.dp(), b3.dp(), &extra, &front, &client2];
        let v = visible_after(live, &envoys, || {
            front.healthy_endpoints("backend").contains(&b3.http_addr())
                && front
                    .healthy_endpoints("backend-tcp")
                    .contains(&b3.tcp_addr())
                && load.answers_now("backend-3") > 0
        });
        steps.finish(
            s,
            "g1 backend-3 added",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &["backend-1", "backend-2", "backend-3"],
            0,
            format!(
                "visible (from its Envoy LIVE, {:.3}s after kuma-dp start): answers both probes",
                (live - started).as_secs_f64()
            ),
        );
    }
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let s = steps.begin();
        let gone_trouble = b3.dp().xds_trouble().unwrap_or(0);
        let t0 = Instant::now();
        b3.dp().proc.signal_main("TERM");
        let v = visible_after(t0, &envoys, || {
            !front.healthy_endpoints("backend").contains(&b3.http_addr())
                && !front
                    .healthy_endpoints("backend-tcp")
                    .contains(&b3.tcp_addr())
        });
        let exit = b3.dp_mut().wait_exit(Duration::from_secs(20));
        let note = format!(
            "visible: frontend dropped backend-3; kuma-dp exited {:.3}s after SIGTERM ({exit:?})",
            t0.elapsed().as_secs_f64()
        );
        steps.finish(
            s,
            "g2 backend-3 SIGTERM",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            gone_trouble,
            note,
        );
        assert!(
            exit.is_some_and(|st| st.success()),
            "kuma-dp of backend-3 after SIGTERM: {exit:?}"
        );
    }

    // (h) mTLS off.
    {
        let envoys = [b1.dp(), b2.dp(), &extra, &front, &client2];
        let s = steps.begin();
        let t0 = Instant::now();
        put_mesh(&cp, None, "");
        let v = visible_after(t0, &envoys, || {
            !json_has(front.active_cluster("backend"), TLS)
                && !json_has(front.active_cluster("backend-tcp"), TLS)
                && [b1.http_in, b1.tcp_in, b2.http_in, b2.tcp_in]
                    .iter()
                    .all(|p| answers_200(*p))
        });
        steps.finish(
            s,
            "h mTLS off",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            "visible: plaintext inbounds, frontend clusters without TLS".into(),
        );
    }
    eprintln!("client time at the end: {:.3}s", load.now());
    steps.conclude("change_without_a_gap");
}

#[test]
fn rolling_restart_without_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(&d.join("cp"), &[]);
    let mut replicas = [Replica::new("backend-1"), Replica::new("backend-2")];
    for r in replicas.iter_mut() {
        r.start(&cp, d);
    }
    let fw = Workload::http("frontend");
    let (out_http, out_tcp) = (free_port(), free_port());
    let front = proxy(
        &cp,
        d,
        "frontend",
        ("frontend", free_port()),
        &fw,
        vec![(out_http, "backend"), (out_tcp, "backend-tcp")],
    );
    DataplaneProc::wait_live(&[replicas[0].dp(), replicas[1].dp(), &front]);
    wait_endpoints(&front, &["backend", "backend-tcp"], 2);
    wait_for(
        "traffic through the frontend",
        Duration::from_secs(20),
        || (answers_200(out_http) && answers_200(out_tcp)).then_some(()),
    );

    let load = Load::start(vec![("http", out_http), ("tcp", out_tcp)]);
    let mut steps = Steps::new(&load);
    let both = ["backend-1", "backend-2"];
    {
        let envoys = [replicas[0].dp(), replicas[1].dp(), &front];
        let s = steps.begin();
        let v = visible_after(Instant::now(), &envoys, || true);
        steps.finish(
            s,
            "baseline",
            (v, Some(VISIBLE_BOUND)),
            &envoys,
            &both,
            0,
            String::new(),
        );
    }
    for i in 0..replicas.len() {
        let s = steps.begin();
        let name = replicas[i].name.clone();
        let gone_trouble = replicas[i].dp().xds_trouble().unwrap_or(0);
        let t0 = Instant::now();
        replicas[i].dp().proc.signal_main("TERM");
        let exit = replicas[i].dp_mut().wait_exit(Duration::from_secs(20));
        let exited = t0.elapsed();
        assert!(
            exit.is_some_and(|st| st.success()),
            "kuma-dp of {name} after SIGTERM: {exit:?}"
        );
        let before = load.answers_now(&name);
        let started = Instant::now();
        replicas[i].start(&cp, d);
        DataplaneProc::wait_live(&[replicas[i].dp()]);
        let live = started.elapsed();
        let envoys = [replicas[0].dp(), replicas[1].dp(), &front];
        // Visible: the restarted replica answers both probes again.
        let v = visible_after(started, &envoys, || load.answers_now(&name) > before);
        let note = format!(
            "kuma-dp exited {:.3}s after SIGTERM; restarted Envoy LIVE after {:.3}s; visible = answering again, from the restart",
            exited.as_secs_f64(),
            live.as_secs_f64()
        );
        // No bound on how soon: a restart takes the time it takes; no request may fail.
        steps.finish(
            s,
            &format!("restart {name}"),
            (v, None),
            &envoys,
            &both,
            gone_trouble,
            note,
        );
    }
    steps.conclude("rolling_restart_without_failed_requests");
}

#[test]
fn killed_replica_leaves_its_peers_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Deregistration 30 s after the stream closed: dropping the endpoint sooner than that is
    // the work of endpoint health, not of the Dataplane's deletion.
    let cp = ControlPlane::start(
        &d.join("cp"),
        &[("KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY", "30s")],
    );
    let mut b1 = Replica::new("backend-1");
    let mut b2 = Replica::new("backend-2");
    b1.start(&cp, d);
    b2.start(&cp, d);
    let fw = Workload::http("frontend");
    let (out_http, out_tcp) = (free_port(), free_port());
    let front = proxy(
        &cp,
        d,
        "frontend",
        ("frontend", free_port()),
        &fw,
        vec![(out_http, "backend"), (out_tcp, "backend-tcp")],
    );
    DataplaneProc::wait_live(&[b1.dp(), b2.dp(), &front]);
    wait_endpoints(&front, &["backend", "backend-tcp"], 2);
    wait_for(
        "traffic through the frontend",
        Duration::from_secs(20),
        || (answers_200(out_http) && answers_200(out_tcp)).then_some(()),
    );
    let load = Load::start(vec![("http", out_http), ("tcp", out_tcp)]);
    let step = load.begin();
    std::thread::sleep(Duration::from_secs(1));
    let b1_admin = b1.dp().admin;

    // SIGKILL to kuma-dp and its Envoy: the harness starts kuma-dp in its own process group,
    // and Envoy, its child, stays in it.
    let t0 = Instant::now();
    b1.dp_mut().proc.kill();
    let killed = t0.elapsed();
    assert!(
        http("GET", b1_admin, "/ready", None).is_err(),
        "the Envoy of backend-1 still answers after SIGKILL to the group"
    );
    let mut dropped = None;
    while t0.elapsed() < Duration::from_secs(40) {
        if !front.healthy_endpoints("backend").contains(&b1.http_addr())
            && !front
                .healthy_endpoints("backend-tcp")
                .contains(&b1.tcp_addr())
        {
            dropped = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, _) = cp.get("/meshes/default/dataplanes/backend-1");
    std::thread::sleep(Duration::from_secs(1));
    let tallies = load.tally(step);
    let mut load = load;
    load.stop();
    eprintln!(
        "killed backend-1 (kuma-dp + Envoy, SIGKILL, reaped in {:.3}s); the frontend dropped its endpoints after {}; \
         Dataplane backend-1 then: HTTP {code} (deregistration delay 30s)",
        killed.as_secs_f64(),
        dropped.map_or("never (40s)".into(), |d| format!("{:.3}s", d.as_secs_f64()))
    );
    for ((probe, _), t) in load.probes.iter().zip(&tallies) {
        eprintln!(
            "  {probe}: {} requests, {} failed, answers {:?}, first failures {:?}",
            t.requests, t.failures, t.answers, t.errors
        );
        assert!(t.requests >= MIN_REQUESTS, "the client did not run");
        assert!(t.answers.contains_key("backend-2"), "backend-2 answered");
    }
    let dropped = dropped.expect("the frontend never dropped the killed replica's endpoints");
    assert!(
        dropped <= Duration::from_secs(2),
        "the frontend dropped the killed replica after {dropped:?}, bound 2s"
    );
    assert_eq!(
        code, 200,
        "the Dataplane must still be registered (30 s deregistration delay): it is endpoint health that drops it"
    );
    // The survivor keeps serving.
    for _ in 0..10 {
        assert_eq!(
            http_probe(out_http).unwrap(),
            (200, "backend-2".to_string())
        );
    }
}
