//! What crosses KDS: resources packed as `KumaResource` messages, their delta names, and the
//! names and labels a resource gets on the other side (Kuma's hash suffix).
//!
//! The envelope is Kuma's (`kuma.mesh.v1alpha1.KumaResource`: `meta` + `spec` as an `Any`),
//! but the spec travels as the resource's REST JSON (`Any.type_url` [`JSON_SPEC`]), not as
//! Kuma's protobuf spec messages: a Kuma zone and this global do not understand each other's
//! resources. Each `Any` in the delta stream is typed by the Kuma type name (`Mesh`,
//! `Dataplane`...), which is also the stream's `type_url`.

use std::collections::HashMap;

use envoy_types::pb::google::protobuf::Any;
use kuma_core::Resource;
use kuma_core::resource::ResourceType;
use prost::Message;

use crate::manager::{DISPLAY_NAME_LABEL, ORIGIN_LABEL, ZONE_LABEL};

/// `Any.type_url` of a spec carried as REST JSON.
pub const JSON_SPEC: &str = "kuma-rs/json";

/// Kuma's `KumaResource` envelope.
#[derive(Clone, PartialEq, Message)]
pub struct KumaResource {
    #[prost(message, optional, tag = "1")]
    pub meta: Option<ResourceMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<Any>,
}

/// Kuma's `KumaResource.Meta`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceMeta {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub mesh: String,
    #[prost(map = "string, string", tag = "4")]
    pub labels: HashMap<String, String>,
}

/// The delta-xDS name of a resource: `<name>.<mesh>`, or `<name>` for global types.
pub fn delta_name(res: &Resource) -> String {
    if res.meta.mesh.is_empty() {
        res.meta.name.clone()
    } else {
        format!("{}.{}", res.meta.name, res.meta.mesh)
    }
}

/// Packs a resource for the stream of its type.
pub fn encode(res: &Resource) -> Any {
    // Without the store's timestamps: a rewrite of the same content is the same version.
    let mut wire = res.to_wire();
    if let Some(m) = wire.as_object_mut() {
        m.remove("creationTime");
        m.remove("modificationTime");
    }
    let json = serde_json::to_vec(&wire).unwrap_or_default();
    let msg = KumaResource {
        meta: Some(ResourceMeta {
            name: res.meta.name.clone(),
            mesh: res.meta.mesh.clone(),
            labels: res
                .meta
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        spec: Some(Any {
            type_url: JSON_SPEC.into(),
            value: json,
        }),
    };
    Any {
        type_url: res.rtype().name().into(),
        value: msg.encode_to_vec(),
    }
}

/// Unpacks a resource received on the stream of `rtype`: decoded and validated like any
/// untrusted document (the other side may be hostile or broken).
pub fn decode(rtype: ResourceType, any: &Any) -> Result<Resource, String> {
    if any.type_url != rtype.name() {
        return Err(format!(
            "resource of type {:?} on the {} stream",
            any.type_url,
            rtype.name()
        ));
    }
    let msg = KumaResource::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
    let spec = msg.spec.ok_or("resource without spec")?;
    if spec.type_url != JSON_SPEC {
        return Err(format!("unsupported spec encoding {:?}", spec.type_url));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&spec.value).map_err(|e| format!("spec: {e}"))?;
    Resource::from_wire(value, Some(rtype)).map_err(|e| e.to_string())
}

/// The name `name` of mesh `mesh` gets on the other side: Kuma's
/// `<name>-<fnv64a(mesh + name + extra...) as safe hex>`, the name shortened to fit 253
/// characters.
pub fn hashed_name(mesh: &str, name: &str, extra: &[&str]) -> String {
    // FNV-1a, 64 bits, over the values one after another (no separator, as Kuma).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [mesh, name].iter().chain(extra) {
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // Kubernetes' SafeEncodeString of the hex digits: no vowels, no 0/1/3 (no words).
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let hash: String = format!("{h:016x}")
        .bytes()
        .map(|c| char::from(ALPHANUMS[usize::from(c) % ALPHANUMS.len()]))
        .collect();
    let keep = 253 - 17;
    let short = if name.len() > keep {
        let mut end = keep;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        &name[..end]
    } else {
        name
    };
    format!("{short}-{hash}")
}

/// The name a resource had where it was created (`kuma.io/display-name`, else its name).
pub fn display_name(res: &Resource) -> &str {
    res.meta
        .labels
        .get(DISPLAY_NAME_LABEL)
        .map_or(res.meta.name.as_str(), String::as_str)
}

/// The copy of a resource the other side stores: the hashed name (unless `keep_name`), the
/// original name in `kuma.io/display-name`, `kuma.io/origin: <origin>`, and `kuma.io/zone`
/// (when `zone` is given) hashed into the name as Kuma does.
pub fn mapped(res: &Resource, origin: &str, zone: Option<&str>, keep_name: bool) -> Resource {
    let mut out = res.clone();
    let display = display_name(res).to_string();
    let labels = &mut out.meta.labels;
    labels.insert(ORIGIN_LABEL.into(), origin.into());
    if let Some(z) = zone {
        labels.insert(ZONE_LABEL.into(), z.into());
    }
    if !keep_name {
        let extra: Vec<&str> = labels
            .get(ZONE_LABEL)
            .map(String::as_str)
            .into_iter()
            .collect();
        out.meta.name = hashed_name(&res.meta.mesh, &display, &extra);
        out.meta.labels.insert(DISPLAY_NAME_LABEL.into(), display);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuma_core::resource::{Mesh, Spec};

    #[test]
    fn hashed_names_are_kumas() {
        // Kuma's KDS golden `pkg/kds/context/testdata/full_sync/policy-simple/zone-1.golden.yaml`:
        // a policy of mesh default named default-timeout-global, synced from global.
        assert_eq!(
            hashed_name("default", "default-timeout-global", &[]),
            "default-timeout-global-54dbd4c66zwbcf9c"
        );
        let n = hashed_name("default", "allow-all", &[]);
        assert!(n.starts_with("allow-all-"), "{n}");
        assert_eq!(n.len(), "allow-all-".len() + 16);
        assert!(
            n["allow-all-".len()..]
                .bytes()
                .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c))
        );
        // The zone is part of the hash; the same inputs give the same name.
        assert_ne!(n, hashed_name("default", "allow-all", &["zone-1"]));
        assert_eq!(
            hashed_name("m", "dp", &["zone-1"]),
            hashed_name("m", "dp", &["zone-1"])
        );
        let long = "a".repeat(300);
        assert_eq!(hashed_name("m", &long, &[]).len(), 253);
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut r = Resource::new("default", "", Spec::Mesh(Mesh::default()));
        r.meta
            .labels
            .insert("kuma.io/origin".into(), "global".into());
        let any = encode(&r);
        assert_eq!(any.type_url, "Mesh");
        let back = decode(ResourceType::Mesh, &any).expect("decodes");
        assert_eq!(back.meta.name, "default");
        assert_eq!(back.meta.labels, r.meta.labels);
        assert_eq!(back.spec, r.spec);
        assert!(decode(ResourceType::Dataplane, &any).is_err());
    }
}
