//! `resource_yaml`: YAML (or JSON) text with one or more `---` separated documents, parsed by
//! `Resource::parse_documents` and each document validated by `Resource::from_wire`, as
//! `kumactl apply` and the `dataplaneResource` of a bootstrap request do. Every accepted
//! resource must round-trip through its wire shape.

use kuma_core::Resource;

use crate::check;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = Resource::parse_documents(text) else {
        return;
    };
    for doc in docs {
        if let Ok(res) = Resource::from_wire(doc, None) {
            check::wire_round_trip(&res);
        }
    }
}
