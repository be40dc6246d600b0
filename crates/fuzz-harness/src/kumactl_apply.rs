//! `kumactl_apply`: what `kumactl apply -f <file> [--var k=v ...]` does before it talks to
//! the control plane: `template::parse_vars` on the flags and `apply::prepare` on the file
//! (substitution, multi-document YAML/JSON parsing, local validation). The input is the
//! `--var` flags, one per line, then a NUL byte, then the file (no NUL: no flags).
//!
//! Invariants: every prepared document is what `--dry-run` prints (the YAML printer), and
//! that output parses and validates again into the same resources.

use kuma_core::Resource;
use kumactl::commands::apply::{self, Input};
use kumactl::printers::{self, Format};
use kumactl::template;

use crate::check;

pub fn run(data: &[u8]) {
    let (flags, file) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let flags = String::from_utf8_lossy(flags);
    let flags: Vec<&str> = flags.lines().collect();
    let Ok(vars) = template::parse_vars(&flags) else {
        return;
    };
    // kumactl reads files as UTF-8 text.
    let Ok(text) = std::str::from_utf8(file) else {
        return;
    };
    let inputs = [Input {
        source: "in.yaml".into(),
        text: text.into(),
    }];
    let Ok(prepared) = apply::prepare(&inputs, &vars) else {
        return;
    };
    for p in prepared {
        let printed = printers::document(&p.document, Format::Yaml);
        let docs = Resource::parse_documents(&printed)
            .unwrap_or_else(|e| panic!("--dry-run output does not parse: {e}\n{printed}"));
        assert_eq!(
            docs.len(),
            1,
            "one document printed as {}:\n{printed}",
            docs.len()
        );
        assert!(
            check::same_json(&docs[0], &p.document),
            "the document changed through the YAML printer:\n{}\n{printed}",
            p.document
        );
        let res = Resource::from_wire(docs[0].clone(), None)
            .unwrap_or_else(|e| panic!("--dry-run output is refused: {e}\n{printed}"));
        assert_eq!(
            (res.rtype(), res.meta.mesh.as_str(), res.meta.name.as_str()),
            (p.rtype, p.mesh.as_str(), p.name.as_str())
        );
        let original = Resource::from_wire(p.document.clone(), None).expect("prepared is valid");
        check::same_resource(&original, &res, &p.document);
        check::wire_round_trip(&res);
    }
}
