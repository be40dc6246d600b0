//! Proto3 JSON of packed resources, the way Envoy's `/config_dump` shows them: proto field
//! names, enums by name, default values left out, 64-bit integers as strings, and every
//! nested `Any` (`typed_config`, `typed_extension_protocol_options`, ...) expanded with its
//! `@type`. For golden files and debugging (feature `json`).
//!
//! Invariants: the output is deterministic. Message fields come in field-number order (as
//! `prost-reflect` writes them) and the keys of protobuf maps are sorted, so golden files do
//! not flap with hash-map order.
//!
//! Only the types compiled into the descriptor set by `build.rs` are known: listener,
//! cluster, endpoint, route, the TLS/HTTP inspector and original_dst listener filters, the HTTP
//! connection manager, tcp_proxy, router, RBAC (with its matcher inputs: URI SAN, server
//! name), TLS and secrets, upstream HTTP protocol
//! options, file access log, and their imports. A resource of another type is an
//! [`Error::UnknownType`]; a nested `Any` of another type an [`Error::Serialize`].

use std::sync::LazyLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use crate::{Snapshot, type_url};

/// Why a resource could not be rendered as JSON.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The type URL names a message the compiled descriptor set does not hold.
    #[error("unknown message type {0:?} (not in kuma-xds' Envoy descriptor set)")]
    UnknownType(String),
    /// The bytes do not decode as the message their type URL names.
    #[error("decoding {type_url}: {source}")]
    Decode {
        /// The type URL of the body.
        type_url: String,
        /// The protobuf decoding error.
        source: prost::DecodeError,
    },
    /// proto3 JSON has no representation for the value (for instance a nested `Any` of an
    /// unknown type, or an out-of-range duration).
    #[error("serializing {type_url}: {source}")]
    Serialize {
        /// The type URL of the body.
        type_url: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    let bytes: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));
    // Invariant: build.rs wrote this set with protox in the same build, imports included, so
    // it decodes and links.
    DescriptorPool::decode(bytes).expect("the descriptor set compiled by build.rs is valid")
});

const OPTIONS: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(true)
    .stringify_64_bit_integers(true)
    .use_enum_numbers(false);

/// One packed resource as proto3 JSON: `{"@type": "<type URL>", <fields>...}`, with nested
/// `Any`s expanded the same way and protobuf map keys sorted.
pub fn resource_to_json(any: &Any) -> Result<Value, Error> {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let desc = POOL
        .get_message_by_name(name)
        .ok_or_else(|| Error::UnknownType(any.type_url.clone()))?;
    // Validate the body against its own type first, so a bad body is a Decode error
    // rather than a serializer message.
    DynamicMessage::decode(desc, any.value.as_slice()).map_err(|source| Error::Decode {
        type_url: any.type_url.clone(),
        source,
    })?;
    let any_desc = POOL
        .get_message_by_name("google.protobuf.Any")
        .ok_or_else(|| Error::UnknownType("google.protobuf.Any".into()))?;
    let wrapper = DynamicMessage::decode(any_desc.clone(), any.encode_to_vec().as_slice())
        .map_err(|source| Error::Decode {
            type_url: any.type_url.clone(),
            source,
        })?;
    let mut json = wrapper
        .serialize_with_options(serde_json::value::Serializer, &OPTIONS)
        .map_err(|source| Error::Serialize {
            type_url: any.type_url.clone(),
            source,
        })?;
    sort_maps(&mut json, &any_desc);
    Ok(json)
}

/// A whole snapshot as `{"<type>": [<resource JSON>, ...]}`, types by short name (`clusters`,
/// `endpoints`, `listeners`, `routes`, `secrets`, else the message name), resources sorted by
/// name. A resource that cannot be rendered appears as `{"@type": ..., "@error": ...}` so a
/// golden file shows the problem instead of hiding it.
pub fn snapshot_to_json(snapshot: &Snapshot) -> Value {
    let mut types: Vec<(&str, Vec<Value>)> = snapshot
        .type_urls()
        .map(|url| {
            let resources = snapshot
                .resources(url)
                .into_iter()
                .flat_map(|m| m.values())
                .map(|r| {
                    resource_to_json(&r.body).unwrap_or_else(
                        |e| serde_json::json!({"@type": r.body.type_url, "@error": e.to_string()}),
                    )
                })
                .collect();
            (short_name(url), resources)
        })
        .collect();
    types.sort_by(|a, b| a.0.cmp(b.0));
    Value::Object(
        types
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::Array(v)))
            .collect(),
    )
}

fn short_name(url: &str) -> &str {
    match url {
        type_url::CLUSTER => "clusters",
        type_url::ENDPOINT => "endpoints",
        type_url::LISTENER => "listeners",
        type_url::ROUTE => "routes",
        type_url::SECRET => "secrets",
        other => other.rsplit('/').next().unwrap_or(other),
    }
}

/// Types whose proto3 JSON inside an `Any` is `{"@type": ..., "value": <json>}`.
fn is_wrapped_in_value(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.ListValue"
            | "google.protobuf.Value"
            | "google.protobuf.Empty"
    )
}

/// Sorts the keys of every protobuf map in `json`, the serialization of a `desc` message.
///
/// prost-reflect holds map fields in a `HashMap` and writes them in its iteration order; with
/// serde_json's `preserve_order` (on in this workspace) that order would reach the output.
/// Message fields keep their field-number order. `Struct` needs nothing: prost-types keeps
/// its fields in a `BTreeMap`.
fn sort_maps(json: &mut Value, desc: &MessageDescriptor) {
    let Value::Object(obj) = json else { return };
    if desc.full_name() == "google.protobuf.Any" {
        let inner = obj
            .get("@type")
            .and_then(Value::as_str)
            .and_then(|url| url.rsplit('/').next())
            .and_then(|name| POOL.get_message_by_name(name));
        match inner {
            Some(inner) if is_wrapped_in_value(inner.full_name()) => {
                if let Some(v) = obj.get_mut("value") {
                    sort_maps(v, &inner);
                }
            }
            Some(inner) => sort_maps(json, &inner),
            None => {}
        }
        return;
    }
    for field in desc.fields() {
        let Some(v) = obj.get_mut(field.name()) else {
            continue;
        };
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let Value::Object(map) = v else { continue };
            map.sort_keys();
            if let Kind::Message(value_desc) = entry.map_entry_value_field().kind() {
                for item in map.values_mut() {
                    sort_maps(item, &value_desc);
                }
            }
        } else if let Kind::Message(m) = field.kind() {
            match v {
                Value::Array(items) => items.iter_mut().for_each(|i| sort_maps(i, &m)),
                one => sort_maps(one, &m),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{Http2ProtocolOptions, Metadata};
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions,
        http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
        },
    };
    use envoy_types::pb::google::protobuf::{Duration, Struct, Value as PbValue, value::Kind};
    use envoy_types::util::pack_any;
    use serde_json::json;

    use super::*;
    use crate::Resource;

    fn http2() -> Any {
        pack_any(HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        })
    }

    fn cluster_with_many_map_entries() -> Cluster {
        let names: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
        let s = |v: &str| Struct {
            fields: [(
                "v".to_string(),
                PbValue {
                    kind: Some(Kind::StringValue(v.into())),
                },
            )]
            .into(),
        };
        Cluster {
            name: "c".into(),
            connect_timeout: Some(Duration {
                seconds: 5,
                nanos: 0,
            }),
            metadata: Some(Metadata {
                filter_metadata: names.iter().rev().map(|n| (n.clone(), s(n))).collect(),
                ..Default::default()
            }),
            typed_extension_protocol_options: names
                .iter()
                .map(|n| (n.clone(), http2()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn expands_nested_any_with_proto_names() {
        let mut c = cluster_with_many_map_entries();
        c.metadata = None;
        c.typed_extension_protocol_options = [("opts".to_string(), http2())].into();
        let got = resource_to_json(&pack_any(c)).unwrap();
        assert_eq!(
            got,
            json!({
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": "c",
                "connect_timeout": "5s",
                "typed_extension_protocol_options": {"opts": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }}
            })
        );
        // Field-number order, `@type` first.
        let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "@type",
                "name",
                "connect_timeout",
                "typed_extension_protocol_options"
            ]
        );
    }

    #[test]
    fn map_keys_are_sorted() {
        let got = resource_to_json(&pack_any(cluster_with_many_map_entries())).unwrap();
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        let want: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
        assert_eq!(keys(&got["typed_extension_protocol_options"]), want);
        assert_eq!(keys(&got["metadata"]["filter_metadata"]), want);
        // Same bytes, same text, every time.
        let text = got.to_string();
        for _ in 0..5 {
            let again = resource_to_json(&pack_any(cluster_with_many_map_entries())).unwrap();
            assert_eq!(again.to_string(), text);
        }
    }

    #[test]
    fn errors_name_the_type() {
        let unknown = Any {
            type_url: "type.googleapis.com/example.Nope".into(),
            value: vec![],
        };
        assert!(matches!(
            resource_to_json(&unknown),
            Err(Error::UnknownType(u)) if u.ends_with("example.Nope")
        ));
        let garbage = Any {
            type_url: type_url::CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(matches!(
            resource_to_json(&garbage),
            Err(Error::Decode { .. })
        ));
        // A nested Any of a type outside the descriptor set.
        let c = Cluster {
            name: "c".into(),
            typed_extension_protocol_options: [("x".to_string(), unknown)].into(),
            ..Default::default()
        };
        let e = resource_to_json(&pack_any(c)).unwrap_err();
        assert!(matches!(e, Error::Serialize { .. }), "{e}");
    }

    #[test]
    fn snapshot_groups_by_short_type_name() {
        let s: Snapshot = [
            Arc::new(Resource::new(
                "b",
                pack_any(Cluster {
                    name: "b".into(),
                    ..Default::default()
                }),
            )),
            Arc::new(Resource::new(
                "a",
                pack_any(Cluster {
                    name: "a".into(),
                    ..Default::default()
                }),
            )),
            Arc::new(Resource::new(
                "x",
                Any {
                    type_url: "type.googleapis.com/example.Nope".into(),
                    value: vec![],
                },
            )),
        ]
        .into_iter()
        .collect();
        let got = snapshot_to_json(&s);
        assert_eq!(got["clusters"][0]["name"], "a");
        assert_eq!(got["clusters"][1]["name"], "b");
        assert!(
            got["example.Nope"][0]["@error"]
                .as_str()
                .unwrap()
                .contains("unknown message type")
        );
    }
}
