//! `resource_json`: the body of a REST `PUT`, decoded by `kuma_cp::api::decode_put` (what the
//! handler does before the manager). The first byte picks the type of the URL (low bits)
//! and whether the URL names the resource the body names (high bit; otherwise `web-1` in
//! mesh `default`), the rest is the body.
//!
//! Invariants: a refusal is a 4xx; an accepted resource has the URL's key and round-trips
//! through its wire shape, and that wire shape is accepted by `PUT` again.

use kuma_core::resource::{ResourceKey, ResourceType, Scope};
use serde_json::Value;

use crate::check;

pub fn run(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    // Types a URL can name (not the control plane's own Config), in their committed order.
    let types: Vec<ResourceType> = ResourceType::ALL
        .into_iter()
        .filter(|t| t.is_exposed())
        .collect();
    let rtype = types[usize::from(sel & 0x7f) % types.len()];
    let (mut mesh, mut name) = ("default".to_string(), "web-1".to_string());
    if sel & 0x80 != 0
        && let Ok(v) = serde_json::from_slice::<Value>(body)
    {
        let field = |f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
        mesh = field("mesh").unwrap_or(mesh);
        name = field("name").unwrap_or(name);
    }
    if rtype.scope() == Scope::Global {
        mesh.clear();
    }
    let key = ResourceKey::new(rtype, mesh, name);
    match kuma_cp::api::decode_put(&key, body) {
        Ok(decoded) => {
            let res = decoded.resource;
            assert_eq!(res.key(), key, "accepted under another key than the URL's");
            check::wire_round_trip(&res);
            let wire = serde_json::to_vec(&res.to_wire()).expect("a JSON value serializes");
            if let Err(e) = kuma_cp::api::decode_put(&key, &wire) {
                panic!("PUT refuses the wire shape of a resource it accepted: {e:?}");
            }
        }
        Err(e) => assert!(
            e.status.is_client_error(),
            "a bad body must be a client error, got {}: {e:?}",
            e.status
        ),
    }
}
