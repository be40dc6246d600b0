//! `kumactl apply -f <file|dir|url|->`: substitute `--var`s, parse every YAML/JSON document,
//! validate each locally (all problems of all documents are reported, and nothing is sent if
//! any document is invalid), then `PUT` them in order. `--dry-run` prints them instead.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use kuma_core::resource::{Resource, ResourceType};
use serde_json::Value;

use super::{Env, write_out};
use crate::cli::ApplyArgs;
use crate::printers::{self, Format};
use crate::template;

/// One input text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// File path, URL or `<stdin>`, for messages.
    pub source: String,
    pub text: String,
}

/// A validated document, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub rtype: ResourceType,
    /// Empty for global-scoped types.
    pub mesh: String,
    pub name: String,
    /// The document as written (after substitution), sent as the PUT body.
    pub document: Value,
}

pub async fn run(env: &mut Env<'_>, args: ApplyArgs) -> Result<()> {
    let vars = template::parse_vars(&args.vars)?;
    let mut inputs = Vec::new();
    for f in &args.files {
        inputs.extend(read_input(f, env.timeout).await?);
    }
    let prepared = prepare(&inputs, &vars)?;
    if args.dry_run {
        let docs: Vec<String> = prepared
            .iter()
            .map(|p| printers::document(&p.document, Format::Yaml))
            .collect();
        return write_out(env.out, &docs.join("---\n"));
    }
    let client = env.client()?;
    for p in &prepared {
        let outcome = client
            .put(p.rtype, &p.mesh, &p.name, &p.document)
            .await
            .with_context(|| format!("cannot apply {} {:?}", p.rtype, p.name))?;
        write_out(env.out, &applied_line(p, outcome.created))?;
        for w in outcome.warnings {
            write_out(env.err, &format!("Warning: {w}\n"))?;
        }
    }
    Ok(())
}

/// Kuma's line for an applied document: `resource type="Dataplane" mesh="default" name="web-1"
/// Created` (or `Updated`); global types show `mesh=""`.
fn applied_line(p: &Prepared, created: bool) -> String {
    let outcome = if created { "Created" } else { "Updated" };
    format!(
        "resource type={:?} mesh={:?} name={:?} {outcome}\n",
        p.rtype.to_string(),
        p.mesh,
        p.name
    )
}

/// Reads one `-f` argument: `-` (stdin), an http(s) URL, a directory (its `*.yaml`, `*.yml`
/// and `*.json` files, sorted by name) or a file.
async fn read_input(arg: &str, timeout: std::time::Duration) -> Result<Vec<Input>> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(vec![Input {
            source: "<stdin>".into(),
            text,
        }]);
    }
    if arg.starts_with("http://") || arg.starts_with("https://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = async {
            let resp = reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(timeout)
                .build()?
                .get(arg)
                .send()
                .await?
                .error_for_status()?;
            resp.text().await
        }
        .await
        .with_context(|| format!("cannot download {arg}"))?;
        return Ok(vec![Input {
            source: arg.into(),
            text,
        }]);
    }
    let path = Path::new(arg);
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot read {arg}"))? {
            let p = entry.with_context(|| format!("cannot read {arg}"))?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if p.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            bail!("no *.yaml, *.yml or *.json files in directory {arg}");
        }
        return files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                Ok(Input {
                    source: p.display().to_string(),
                    text,
                })
            })
            .collect();
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {arg}"))?;
    Ok(vec![Input {
        source: arg.into(),
        text,
    }])
}

/// Substitutes, parses and validates every document of every input; the error lists every
/// problem found.
pub fn prepare(inputs: &[Input], vars: &BTreeMap<String, String>) -> Result<Vec<Prepared>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for input in inputs {
        let text = match template::render(&input.text, vars) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {e}", input.source));
                continue;
            }
        };
        let docs = match Resource::parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                let reasons: Vec<&str> = e.violations.iter().map(|v| v.message.as_str()).collect();
                problems.push(format!("{}: {}", input.source, reasons.join("; ")));
                continue;
            }
        };
        for (i, doc) in docs.into_iter().enumerate() {
            match Resource::from_wire(doc.clone(), None) {
                Ok(r) => out.push(Prepared {
                    rtype: r.rtype(),
                    mesh: r.meta.mesh.clone(),
                    name: r.meta.name.clone(),
                    document: doc,
                }),
                Err(e) => {
                    let what = match (
                        doc.get("type").and_then(Value::as_str),
                        doc.get("name").and_then(Value::as_str),
                    ) {
                        (Some(t), Some(n)) => format!(" ({t} {n:?})"),
                        (Some(t), None) => format!(" ({t})"),
                        _ => String::new(),
                    };
                    let mut msg =
                        format!("{}: document {}{what} is not valid:", input.source, i + 1);
                    for v in &e.violations {
                        if v.field.is_empty() {
                            msg.push_str(&format!("\n* {}", v.message));
                        } else {
                            msg.push_str(&format!("\n* {}: {}", v.field, v.message));
                        }
                    }
                    problems.push(msg);
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if out.is_empty() {
        let sources: Vec<&str> = inputs.iter().map(|i| i.source.as_str()).collect();
        bail!("no resources found in {}", sources.join(", "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> Vec<Input> {
        vec![Input {
            source: "in.yaml".into(),
            text: text.into(),
        }]
    }

    #[test]
    fn prepares_documents_with_vars() {
        let vars = template::parse_vars(&["name=dp-1", "port=8080"]).unwrap();
        let text = "type: Mesh\nname: demo\n---\ntype: Dataplane\nmesh: demo\nname: {{ name }}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: {{port}}\n    servicePort: 9090\n    tags:\n      kuma.io/service: web\n";
        let got = prepare(&input(text), &vars).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].rtype, got[0].mesh.as_str()),
            (ResourceType::Mesh, "")
        );
        assert_eq!(got[1].rtype, ResourceType::Dataplane);
        assert_eq!(
            (got[1].mesh.as_str(), got[1].name.as_str()),
            ("demo", "dp-1")
        );
        assert_eq!(got[1].document["networking"]["inbound"][0]["port"], 8080);
    }

    #[test]
    fn reports_every_invalid_field_of_every_document() {
        let text = "type: Dataplane\nmesh: default\nname: Bad_Name\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 80\n    tags: {app: x}\n---\ntype: Mesh\nname: ok\n---\ntype: Bogus\nname: x\n";
        let err = prepare(&input(text), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("in.yaml: document 1 (Dataplane \"Bad_Name\") is not valid:\n* name: "),
            "{err}"
        );
        assert!(
            err.contains("\n* networking.inbound[0].tags[\"kuma.io/service\"]: tag has to exist"),
            "{err}"
        );
        assert!(
            err.contains(
                "in.yaml: document 3 (Bogus \"x\") is not valid:\n* type: invalid resource type"
            ),
            "{err}"
        );
        assert!(!err.contains("document 2"), "{err}");
    }

    #[test]
    fn missing_var_and_bad_yaml() {
        let err = prepare(&input("type: Mesh\nname: {{ mesh }}\n"), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "in.yaml: no value for template variable(s) mesh: pass --var <name>=<value>"
        );
        let err = prepare(&input("type: [\n"), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("in.yaml: cannot parse YAML/JSON"), "{err}");
        let err = prepare(&input("# nothing\n"), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no resources found in in.yaml");
    }

    #[test]
    fn applied_lines_as_kuma_prints_them() {
        let text = "type: Mesh\nname: demo\n---\ntype: Dataplane\nmesh: demo\nname: dp-1\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 80\n    servicePort: 9090\n    tags:\n      kuma.io/service: web\n";
        let got = prepare(&input(text), &BTreeMap::new()).unwrap();
        assert_eq!(
            applied_line(&got[0], true),
            "resource type=\"Mesh\" mesh=\"\" name=\"demo\" Created\n"
        );
        assert_eq!(
            applied_line(&got[1], false),
            "resource type=\"Dataplane\" mesh=\"demo\" name=\"dp-1\" Updated\n"
        );
    }

    #[test]
    fn json_documents() {
        let got = prepare(
            &input(r#"{"type": "Zone", "name": "zone-1"}"#),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(got[0].rtype, ResourceType::Zone);
    }
}
