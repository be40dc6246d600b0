//! Target `kds_sink`: what an authenticated zone sends global over KDS. The first byte picks
//! the stream's type, the rest is the resource's `KumaResource` bytes, fed to
//! `kuma_cp::kds::sink::receive` as global's sink for zone `zone-1` does.
//!
//! Invariants: an accepted resource is zone-1's (origin `zone`, `kuma.io/zone: zone-1`, its
//! name the hash of its display name in zone-1, a Dataplane's inbounds not tagged with
//! another zone), of the stream's type, and its encoding is received back unchanged.

use envoy_types::pb::google::protobuf::Any;
use kuma_core::resource::ResourceType;
use kuma_cp::kds::sink::{Peer, receive};
use kuma_cp::kds::wire;

const TYPES: [ResourceType; 3] = [
    ResourceType::Dataplane,
    ResourceType::DataplaneInsight,
    ResourceType::MeshTrafficPermission,
];

pub fn run(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let rtype = TYPES[usize::from(pick) % TYPES.len()];
    let peer = Peer::Zone("zone-1".into());
    let any = Any {
        type_url: rtype.name().into(),
        value: body.to_vec(),
    };
    let Ok(res) = receive(&peer, rtype, &any) else {
        return;
    };
    assert_eq!(res.rtype(), rtype);
    let labels = &res.meta.labels;
    assert_eq!(
        labels.get("kuma.io/origin").map(String::as_str),
        Some("zone")
    );
    assert_eq!(
        labels.get("kuma.io/zone").map(String::as_str),
        Some("zone-1")
    );
    let display = labels.get("kuma.io/display-name").expect("a display name");
    assert_eq!(
        res.meta.name,
        wire::hashed_name(&res.meta.mesh, display, &["zone-1"])
    );
    if rtype == ResourceType::Dataplane {
        let w = res.to_wire();
        for inbound in w["networking"]["inbound"].as_array().into_iter().flatten() {
            let z = &inbound["tags"]["kuma.io/zone"];
            assert!(z.is_null() || z == "zone-1", "{w}");
        }
    }
    let again = receive(&peer, rtype, &wire::encode(&res)).expect("its own encoding");
    assert_eq!(again.spec, res.spec);
    assert_eq!(again.meta.labels, res.meta.labels);
    assert_eq!(again.meta.name, res.meta.name);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `*-ok` seeds are accepted (so the invariants above run on them), the others not.
    #[test]
    fn seeds_reach_the_invariants() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kds_sink");
        let peer = Peer::Zone("zone-1".into());
        for name in [
            "dataplane-ok",
            "insight-ok",
            "mtp-ok",
            "dataplane-other-zone-tag",
            "dataplane-other-zone-label",
        ] {
            let data = std::fs::read(dir.join(name)).expect("a seed");
            let rtype = TYPES[usize::from(data[0]) % TYPES.len()];
            let any = Any {
                type_url: rtype.name().into(),
                value: data[1..].to_vec(),
            };
            let got = receive(&peer, rtype, &any);
            assert_eq!(got.is_ok(), name.ends_with("-ok"), "{name}: {got:?}");
            run(&data);
        }
    }
}
