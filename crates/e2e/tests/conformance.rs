//! Conformance suite: the documents of `tests/conformance/cases.yaml` (written by us from
//! Kuma 2.14.3's documented behaviour and validator tests), each fed to a real kuma-cp through
//! the REST API (`PUT`) and through `kumactl apply -f`, and checked against Kuma's verdict:
//! accepted (with the warnings given), rejected as invalid (exactly the violations given, on
//! Kuma's field paths), or rejected as malformed (Kuma's `Bad Request`). A rejected document
//! must leave the store exactly as it was.
//!
//! Every row runs, whoever implements it (`owner`); the failures are listed together, grouped
//! by owner, so a run shows at once what is missing where.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::*;
use serde_json::{Value, json};

const CASES: &str = include_str!("conformance/cases.yaml");

/// One row of the table.
struct Case {
    id: String,
    owner: String,
    expect: String,
    doc_text: String,
    doc: Value,
    url: Option<String>,
    via: Vec<String>,
    setup: Vec<String>,
    /// (field, message substring); the message is empty for `malformed` rows.
    fields: Vec<(String, String)>,
    warnings: Option<Vec<String>>,
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn load() -> Vec<Case> {
    let rows: Value = serde_saphyr::from_str(CASES).expect("cases.yaml parses");
    let rows = rows.as_array().expect("cases.yaml is a list");
    let mut seen = std::collections::HashSet::new();
    rows.iter()
        .map(|r| {
            let id = str_of(r, "id").expect("every row has an id");
            assert!(seen.insert(id.clone()), "duplicate row id {id}");
            let doc_text = str_of(r, "doc").unwrap_or_else(|| panic!("{id}: no doc"));
            let doc: Value = serde_saphyr::from_str(&doc_text)
                .unwrap_or_else(|e| panic!("{id}: doc is not YAML: {e}"));
            let expect = str_of(r, "expect").unwrap_or_else(|| panic!("{id}: no expect"));
            assert!(
                matches!(expect.as_str(), "ok" | "invalid" | "malformed"),
                "{id}: expect must be ok, invalid or malformed"
            );
            let list = |key: &str| -> Vec<Value> {
                r.get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let fields = list("fields")
                .iter()
                .map(|f| {
                    (
                        str_of(f, "field").unwrap_or_else(|| panic!("{id}: field without name")),
                        str_of(f, "message").unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>();
            if expect != "ok" {
                assert!(!fields.is_empty(), "{id}: a rejected row names its fields");
            }
            let via: Vec<String> = match r.get("via") {
                Some(v) => v
                    .as_array()
                    .expect("via is a list")
                    .iter()
                    .map(|s| s.as_str().expect("via item").to_string())
                    .collect(),
                None => vec!["rest".into(), "kumactl".into()],
            };
            Case {
                owner: str_of(r, "owner").unwrap_or_else(|| panic!("{id}: no owner")),
                expect,
                doc_text,
                doc,
                url: str_of(r, "url"),
                via,
                setup: list("setup")
                    .iter()
                    .map(|s| s.as_str().expect("setup item is YAML text").to_string())
                    .collect(),
                fields,
                warnings: r.get("warnings").map(|w| {
                    w.as_array()
                        .expect("warnings is a list")
                        .iter()
                        .map(|s| s.as_str().expect("warning text").to_string())
                        .collect()
                }),
                id,
            }
        })
        .collect()
}

/// The REST path of a document: `/meshes/{mesh}/{ws}/{name}` or `/{ws}/{name}`.
fn url_of(doc: &Value) -> Option<String> {
    let name = str_of(doc, "name")?;
    let mesh = str_of(doc, "mesh").unwrap_or_else(|| "default".into());
    let ws = match str_of(doc, "type")?.as_str() {
        "Mesh" => return Some(format!("/meshes/{name}")),
        "GlobalSecret" => return Some(format!("/global-secrets/{name}")),
        "Zone" => return Some(format!("/zones/{name}")),
        "Dataplane" => "dataplanes",
        "MeshTrafficPermission" => "meshtrafficpermissions",
        "Secret" => "secrets",
        _ => return None,
    };
    Some(format!("/meshes/{mesh}/{ws}/{name}"))
}

/// Everything a document could change, as the API lists it (server-set times included). A
/// listing that fails is kept as its error: a resource the server cannot read back (a bug
/// some row exposed) must not hide every later row, and the comparison still holds. Secrets
/// are listed mesh by mesh, so such a failure masks one mesh only.
fn stored(cp: &ControlPlane) -> Value {
    let mut out = serde_json::Map::new();
    let mut list = |path: String| {
        let (code, v) = cp.get(&format!("{path}?size=1000"));
        out.insert(path, json!({"status": code, "body": v}));
    };
    for path in [
        "/meshes",
        "/dataplanes",
        "/meshtrafficpermissions",
        "/global-secrets",
        "/zones",
    ] {
        list(path.to_string());
    }
    let (_, meshes) = cp.get("/meshes?size=1000");
    let names: Vec<String> = meshes["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|m| str_of(m, "name")).collect())
        .unwrap_or_default();
    for mesh in names {
        list(format!("/meshes/{mesh}/secrets"));
    }
    Value::Object(out)
}

/// Whether each of `want` is contained in one of `got`, in order.
fn in_order(want: &[String], got: &[String]) -> bool {
    let mut rest = got.iter();
    want.iter().all(|w| rest.any(|g| g.contains(w.as_str())))
}

fn run_rest(cp: &ControlPlane, case: &Case) -> Result<(), String> {
    let url = case
        .url
        .clone()
        .or_else(|| url_of(&case.doc))
        .ok_or("no url: give one in the row")?;
    let before = stored(cp);
    let (code, body) = cp.put(&url, &case.doc);
    let ctx = || format!("PUT {url} -> {code} {body}");
    match case.expect.as_str() {
        "ok" => {
            if code != 200 && code != 201 {
                return Err(format!("expected 200/201: {}", ctx()));
            }
            let got: Vec<String> = body
                .get("warnings")
                .and_then(Value::as_array)
                .map(|w| {
                    w.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            match &case.warnings {
                None if body != json!({}) => {
                    return Err(format!("expected the body {{}}: {}", ctx()));
                }
                Some(want) if !in_order(want, &got) => {
                    return Err(format!("expected warnings {want:?}: {}", ctx()));
                }
                _ => {}
            }
            let (code, _) = cp.get(&url);
            if code != 200 {
                return Err(format!("accepted but GET {url} answers {code}"));
            }
        }
        "invalid" => {
            if code != 400 {
                return Err(format!("expected 400: {}", ctx()));
            }
            if body["title"] != "Could not process a resource"
                || body["detail"] != "Resource is not valid"
            {
                return Err(format!(
                    "expected title 'Could not process a resource', detail 'Resource is not valid': {}",
                    ctx()
                ));
            }
            let params: Vec<(String, String)> = body["invalid_parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            (
                                str_of(p, "field").unwrap_or_default(),
                                str_of(p, "reason").unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let matches = params.len() == case.fields.len()
                && params
                    .iter()
                    .zip(&case.fields)
                    .all(|((f, r), (wf, wm))| f == wf && r.contains(wm.as_str()));
            if !matches {
                return Err(format!(
                    "expected invalid_parameters {:?}, got {params:?}",
                    case.fields
                ));
            }
        }
        _ => {
            if code != 400 || body["title"] != "Bad Request" {
                return Err(format!("expected 400 Bad Request: {}", ctx()));
            }
            let want = format!("invalid {} object", url_type(&url));
            if !body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(&want))
            {
                return Err(format!("expected a detail starting {want:?}: {}", ctx()));
            }
            let fields: Vec<&str> = body["invalid_parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["field"].as_str()).collect())
                .unwrap_or_default();
            if let Some((missing, _)) = case
                .fields
                .iter()
                .find(|(f, _)| !fields.contains(&f.as_str()))
            {
                return Err(format!("field {missing:?} not named: {}", ctx()));
            }
        }
    }
    if case.expect != "ok" {
        let after = stored(cp);
        if after != before {
            return Err(format!(
                "rejected, yet the store changed\nbefore: {before}\nafter: {after}"
            ));
        }
    }
    Ok(())
}

/// The type a REST path names (for Kuma's `invalid <Type> object` detail).
fn url_type(url: &str) -> &'static str {
    let segs: Vec<&str> = url.trim_start_matches('/').split('/').collect();
    let ws = match segs.as_slice() {
        ["meshes", _] => "meshes",
        ["meshes", _, ws, _] => ws,
        [ws, _] => ws,
        _ => "",
    };
    match ws {
        "meshes" => "Mesh",
        "dataplanes" => "Dataplane",
        "meshtrafficpermissions" => "MeshTrafficPermission",
        "secrets" => "Secret",
        "global-secrets" | "globalsecrets" => "GlobalSecret",
        "zones" => "Zone",
        _ => "?",
    }
}

fn run_kumactl(cp: &ControlPlane, case: &Case, dir: &Path) -> Result<(), String> {
    let file = dir.join(format!("{}.yaml", case.id));
    std::fs::write(&file, &case.doc_text).map_err(|e| format!("writing {file:?}: {e}"))?;
    let before = stored(cp);
    let (ok, stdout, stderr) = cp.kumactl(&["apply", "-f", &file.display().to_string()]);
    let ctx = || format!("kumactl apply: exit ok {ok}\nstdout: {stdout}\nstderr: {stderr}");
    if case.expect == "ok" {
        if !ok {
            return Err(format!("expected success: {}", ctx()));
        }
        let got: Vec<String> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("Warning: ").map(str::to_string))
            .collect();
        match &case.warnings {
            None if !got.is_empty() => {
                return Err(format!("expected no warning: {}", ctx()));
            }
            Some(want) if !in_order(want, &got) => {
                return Err(format!("expected `Warning: ` lines {want:?}: {}", ctx()));
            }
            _ => {}
        }
        return Ok(());
    }
    if ok {
        return Err(format!("expected a failure: {}", ctx()));
    }
    if let Some((missing, _)) = case
        .fields
        .iter()
        .find(|(f, _)| !stderr.contains(f.as_str()))
    {
        return Err(format!("stderr does not name {missing:?}: {}", ctx()));
    }
    let after = stored(cp);
    if after != before {
        return Err(format!(
            "rejected, yet the store changed\nbefore: {before}\nafter: {after}"
        ));
    }
    Ok(())
}

#[test]
fn documents_are_accepted_and_rejected_as_kuma_does() {
    let cases = load();
    let tmp = tempfile::tempdir().expect("temp dir");
    let cp = ControlPlane::start(&tmp.path().join("cp"), &[]);
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut runs = 0;
    for case in &cases {
        for setup in &case.setup {
            let doc: Value = serde_saphyr::from_str(setup).expect("setup is YAML");
            let url = url_of(&doc).expect("setup document has a type and a name");
            let (code, body) = cp.put(&url, &doc);
            assert!(
                code == 200 || code == 201,
                "{}: setup PUT {url}: {code} {body}",
                case.id
            );
        }
        for via in &case.via {
            runs += 1;
            let result = match via.as_str() {
                "rest" => run_rest(&cp, case),
                "kumactl" => run_kumactl(&cp, case, &docs),
                other => Err(format!("unknown via {other:?}")),
            };
            if let Err(e) = result {
                failures
                    .entry(case.owner.clone())
                    .or_default()
                    .push(format!("{} via {via}: {e}", case.id));
            }
        }
    }
    let failed: usize = failures.values().map(Vec::len).sum();
    eprintln!(
        "conformance: {} rows, {runs} runs, {} passed, {failed} failed",
        cases.len(),
        runs - failed
    );
    for (owner, list) in &failures {
        let ids: Vec<&str> = list
            .iter()
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        eprintln!("owner {owner}: {} failed: {}", list.len(), ids.join(" "));
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures
            .iter()
            .flat_map(|(owner, list)| list.iter().map(move |l| format!("[{owner}] {l}")))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

/// Starts kuma-dp with the Dataplane `yaml` (mesh `default`, `name`), a generated token and
/// Envoy's admin on `admin_port`.
fn start_kuma_dp(cp: &ControlPlane, name: &str, yaml: &str, dir: &Path) -> Proc {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("writing the dataplane file");
    let token = dir.join(format!("{name}.token"));
    std::fs::write(&token, cp.dataplane_token("default", name)).expect("writing the token");
    let mut cmd = Command::new(binary("kuma-dp"));
    cmd.arg("run")
        .arg("--cp-address")
        .arg(cp.cp_address())
        .arg("--ca-cert-file")
        .arg(cp.ca_file())
        .arg("--dataplane-file")
        .arg(&file)
        .arg("--dataplane-token-file")
        .arg(&token)
        .arg("--binary-path")
        .arg(envoy())
        .arg("--drain-time")
        .arg("1s")
        .arg("--readiness-port")
        .arg(free_port().to_string())
        .arg("--envoy-log-level")
        .arg("warning")
        .arg("--dns-coredns-port")
        .arg(free_port().to_string())
        .env("KUMA_CONTROL_PLANE_RETRY_BACKOFF", "200ms");
    Proc::spawn(
        &format!("kuma-dp {name}"),
        cmd,
        dir.join(format!("dp-{name}.log")),
    )
    .expect("start kuma-dp")
}

/// Dataplanes Kuma accepts and this control plane used to refuse (an inbound without tags, a
/// proxy without inbounds, an unknown field in the proxy's own Dataplane) get their
/// configuration on real Envoy, and the tag-less inbound carries traffic to its workload.
#[test]
fn dataplanes_kuma_accepts_run_on_envoy() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cp = ControlPlane::start(&tmp.path().join("cp"), &[]);
    let workload = Workload::http("tagless-workload");
    let (inbound, admin_a, admin_b) = (free_port(), free_port(), free_port());
    let tagless = format!(
        "type: Dataplane\nmesh: default\nname: tagless\nnetworking:\n  address: 127.0.0.1\n  futureField: {{x: 1}}\n  admin:\n    port: {admin_a}\n  inbound:\n  - port: {inbound}\n    servicePort: {}\n    serviceAddress: 127.0.0.1\n",
        workload.port
    );
    let no_inbound = format!(
        "type: Dataplane\nmesh: default\nname: no-inbound\nnetworking:\n  address: 127.0.0.1\n  admin:\n    port: {admin_b}\n"
    );
    let _a = start_kuma_dp(&cp, "tagless", &tagless, tmp.path());
    let _b = start_kuma_dp(&cp, "no-inbound", &no_inbound, tmp.path());
    for (name, admin) in [("tagless", admin_a), ("no-inbound", admin_b)] {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
        wait_for(&format!("{name} LIVE"), Duration::from_secs(30), || {
            matches!(http("GET", addr, "/ready", None), Ok((200, b)) if b.contains("LIVE"))
                .then_some(())
        });
        wait_for(&format!("{name} online"), Duration::from_secs(10), || {
            cp.is_online("default", name).then_some(())
        });
    }
    let body = wait_for(
        "traffic through the tag-less inbound",
        Duration::from_secs(10),
        // A TCP inbound (no protocol tag) to a workload that keeps its connection open.
        || http_probe(inbound).ok().filter(|(code, _)| *code == 200),
    );
    assert_eq!(body.1.trim(), "tagless-workload");
    // The unknown field was ignored (and logged), not stored.
    let (code, stored) = cp.get("/meshes/default/dataplanes/tagless");
    assert_eq!(code, 200, "{stored}");
    assert!(
        stored["networking"].get("futureField").is_none(),
        "{stored}"
    );
    assert!(
        stored["networking"]["inbound"][0].get("tags").is_none(),
        "{stored}"
    );
    let log = cp.proc.log_text();
    assert!(
        log.contains("unknown field \\\"futureField\\\" at networking")
            || log.contains("unknown field \"futureField\" at networking"),
        "the control plane did not name the unknown field:\n{log}"
    );
}
