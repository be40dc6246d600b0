//! Kuma 2.14.3's `dataplane_validator_test.go` table, row by row (inputs rewritten here; the
//! field paths and messages are Kuma's contract), plus the decoding rules around it.

use super::*;
use crate::resource::wire;
use serde_json::json;

/// Decodes a Dataplane spec as the API does (nulls, unknown fields) and validates it.
fn check(v: Value) -> Vec<(String, String)> {
    let mut v = v;
    wire::normalize_nulls(&mut v);
    let (dp, _warnings) =
        wire::decode_spec::<Dataplane>(v, "").unwrap_or_else(|e| panic!("does not decode: {e}"));
    match dp.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e
            .violations
            .into_iter()
            .map(|v| (v.field, v.message))
            .collect(),
    }
}

fn net(extra: Value) -> Value {
    let mut n = json!({"address": "192.168.0.1"});
    if let (Value::Object(n), Value::Object(extra)) = (&mut n, extra) {
        n.extend(extra);
    }
    json!({ "networking": n })
}

fn svc(name: &str) -> Value {
    json!({ "kuma.io/service": name })
}

/// Expected violations, `(field, message)`, in order.
type Expected = Vec<(String, String)>;

/// Expected violations: `(field, message)` pairs.
macro_rules! want {
    ($(($f:expr, $m:expr $(,)?)),* $(,)?) => {
        vec![$(($f.to_string(), $m.to_string())),*]
    };
}

const PORT: &str = "port must be in the range [1, 65535]";
const KINDS: &str =
    "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService";
const PROTO_HINT: &str = "Allowed values: grpc, http, http2, kafka, tcp";
const DIFFER: &str = "serviceAddress and servicePort has to differ from address and port";
const URL_PATH: &str = "should be a valid URL Path";
const TP: &str = "networking.transparentProxing.reachableBackends.refs";

#[test]
fn accepted_rows() {
    let rows: Vec<(&str, Value)> = vec![
        (
            "inbound and outbound",
            net(json!({
                "inbound": [{"port": 8080, "tags": {"kuma.io/service": "backend", "version": "1"}}],
                "outbound": [{"port": 3333, "tags": svc("redis")}]})),
        ),
        (
            "servicePort and loopback addresses",
            net(json!({
                "inbound": [{"port": 8080, "servicePort": 7777, "address": "127.0.0.1", "tags": svc("backend")}],
                "outbound": [{"port": 3333, "address": "127.0.0.1", "tags": svc("redis")}]})),
        ),
        (
            "IPv6",
            json!({"networking": {"address": "0:0:0:0:0:FFFF:C0A8:0001",
                "inbound": [{"port": 8080, "address": "::1", "tags": svc("backend")}],
                "outbound": [{"port": 3333, "address": "::1", "tags": svc("redis")}]}}),
        ),
        (
            "delegated gateway with tags and an outbound",
            net(json!({
                "gateway": {"tags": {"kuma.io/service": "gateway", "kuam.io/protocol": "tcp", "version": "1"}},
                "outbound": [{"port": 3333, "tags": svc("redis")}]})),
        ),
        (
            "gateway tag value with a colon",
            net(json!({"gateway": {"tags": {"kuma.io/service": "abc.0123-789.under_score:90"}}})),
        ),
        (
            "hostname address",
            json!({"networking": {"address": "example.com",
                "inbound": [{"port": 8080, "tags": svc("backend")}]}}),
        ),
        (
            "probes",
            json!({"networking": {"address": "192.168.0.1", "inbound": [{"port": 8080, "tags": svc("backend")}]},
                "probes": {"port": 9000, "endpoints": [{"inboundPort": 8088, "inboundPath": "/healthz", "path": "/8080/healthz"}]}}),
        ),
        (
            "serviceProbe",
            net(json!({"inbound": [{"port": 8080, "tags": svc("backend"),
                "serviceProbe": {"interval": "1s", "unhealthyThreshold": 5, "tcp": {}}}]})),
        ),
        (
            "admin port equal to inbound and outbound ports on other interfaces",
            net(json!({"admin": {"port": 8080},
                "inbound": [{"port": 8080, "address": "192.168.0.1", "tags": svc("backend")}],
                "outbound": [{"port": 8080, "address": "192.168.0.1", "tags": svc("redis")}]})),
        ),
        (
            "metrics with distinct aggregate names",
            json!({"networking": {"address": "192.168.0.1", "inbound": [{"port": 8080, "tags": svc("backend")}]},
                "metrics": {"type": "prometheus", "conf": {"aggregate": [
                    {"name": "app", "port": 123}, {"name": "sidecar", "port": 456}]}}}),
        ),
        (
            "metrics type only",
            json!({"networking": {"address": "192.168.0.1", "inbound": [{"port": 8080, "tags": svc("backend")}]},
                "metrics": {"type": "prometheus"}}),
        ),
        (
            "outbound backendRefs",
            net(json!({"outbound": [
                {"port": 3333, "backendRef": {"kind": "MeshService", "name": "redis", "port": 6379}},
                {"port": 3334, "backendRef": {"kind": "MeshExternalService", "name": "httpbin"}},
                {"port": 3335, "backendRef": {"kind": "MeshService", "labels": {"app": "redis"}, "port": 6379}}]})),
        ),
        (
            "reachable backends",
            net(
                json!({"transparentProxying": {"reachableBackends": {"refs": [
                {"kind": "MeshService", "name": "redis", "port": 6379},
                {"kind": "MeshExternalService", "name": "httpbin", "namespace": "kuma-system"},
                {"kind": "MeshService", "labels": {"app": "redis"}}]}}}),
            ),
        ),
        (
            "no inbounds, transparent proxying only",
            net(
                json!({"transparentProxying": {"redirectPortInbound": 15006, "redirectPortOutbound": 15001}}),
            ),
        ),
        (
            "no inbounds, outbounds only",
            net(json!({"outbound": [{"port": 3333, "tags": svc("redis")}]})),
        ),
        (
            "zone ingress listener next to an inbound",
            net(json!({"inbound": [{"port": 8080, "tags": svc("backend")}],
                "listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001, "name": "zi"}]})),
        ),
        (
            "zone egress listener only",
            net(
                json!({"listeners": [{"type": "ZoneEgress", "address": "192.168.0.1", "port": 10002, "name": "ze"}]}),
            ),
        ),
        (
            "two zone ingress listeners on distinct ports, one without name",
            net(json!({"listeners": [
                {"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001, "name": "zi-1"},
                {"type": "ZoneIngress", "address": "192.168.0.1", "port": 10002}]})),
        ),
        (
            "inbound without any tags",
            net(json!({"inbound": [{"port": 8080}]})),
        ),
        (
            "delegated gateway with empty tags",
            net(json!({"gateway": {"type": "DELEGATED", "tags": {}}})),
        ),
        (
            "serviceAddress and servicePort differ",
            net(
                json!({"inbound": [{"port": 10001, "serviceAddress": "192.168.0.2", "servicePort": 5050,
                "address": "1.1.1.1", "tags": svc("backend")}]}),
            ),
        ),
        (
            "address equals serviceAddress but ports differ",
            net(
                json!({"inbound": [{"port": 10001, "address": "192.168.0.2", "serviceAddress": "192.168.0.2",
                "servicePort": 10002, "tags": svc("backend")}]}),
            ),
        ),
        (
            "no networking.address check for ports only: implicit addresses never forward to itself",
            net(json!({"inbound": [{"port": 8080, "servicePort": 8080, "tags": svc("backend")}]})),
        ),
        (
            "quickstart redis: explicit serviceAddress equal to address, other servicePort",
            json!({"networking": {"address": "127.0.0.1", "admin": {"port": 9903},
                "inbound": [{"port": 16379, "servicePort": 26379, "serviceAddress": "127.0.0.1",
                    "tags": {"kuma.io/service": "redis", "kuma.io/protocol": "tcp"}}]}}),
        ),
    ];
    for (name, v) in rows {
        assert_eq!(check(v), Vec::<(String, String)>::new(), "row {name:?}");
    }
}

#[test]
fn rejected_rows() {
    let gw = |extra: Value| {
        let mut n = json!({"gateway": {"type": "BUILTIN", "tags": svc("gateway")}});
        if let (Value::Object(n), Value::Object(extra)) = (&mut n, extra) {
            n.extend(extra);
        }
        net(n)
    };
    let rows: Vec<(&str, Value, Expected)> = vec![
        (
            "address 0.0.0.0",
            json!({"networking": {"address": "0.0.0.0", "inbound": [{"port": 8080, "tags": svc("a")}]}}),
            want![("networking.address", "must not be 0.0.0.0 or ::")],
        ),
        (
            "address ::",
            json!({"networking": {"address": "::", "inbound": [{"port": 8080, "tags": svc("a")}]}}),
            want![("networking.address", "must not be 0.0.0.0 or ::")],
        ),
        (
            "no networking",
            json!({}),
            want![("networking", "must be defined")],
        ),
        (
            "empty networking",
            json!({"networking": {}}),
            want![("networking.address", "address can't be empty")],
        ),
        (
            "no address",
            json!({"networking": {"inbound": [{"port": 8080, "tags": svc("a")}],
                "outbound": [{"port": 3333, "tags": svc("b")}]}}),
            want![("networking.address", "address can't be empty")],
        ),
        (
            "address neither IP nor domain",
            json!({"networking": {"address": "..>_<..", "inbound": [{"port": 8080, "tags": svc("a")}]}}),
            want![(
                "networking.address",
                "address has to be valid IP address or domain name",
            )],
        ),
        (
            "inbound on a delegated gateway",
            net(
                json!({"gateway": {"tags": svc("kong")}, "inbound": [{"port": 8080, "tags": svc("a")}]}),
            ),
            want![(
                "networking.inbound",
                "inbound cannot be defined for delegated gateways",
            )],
        ),
        (
            "listeners on a delegated gateway",
            net(json!({"gateway": {"tags": svc("kong")},
                "listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001}]})),
            want![(
                "networking.listeners",
                "listeners cannot be defined for delegated gateways",
            )],
        ),
        (
            "inbound on a builtin gateway",
            gw(json!({"inbound": [{"port": 8080, "tags": svc("a")}]})),
            want![(
                "networking.inbound",
                "inbound cannot be defined for builtin gateways",
            )],
        ),
        (
            "outbound on a builtin gateway",
            gw(json!({"outbound": [{"port": 3333, "tags": svc("a")}]})),
            want![(
                "networking.outbound",
                "outbound cannot be defined for builtin gateways",
            )],
        ),
        (
            "probes on a builtin gateway",
            {
                let mut v = gw(json!({}));
                v["probes"] = json!({"port": 0, "endpoints": [{"inboundPort": 0}]});
                v
            },
            want![(
                "networking.probes",
                "probes cannot be defined for builtin gateways",
            )],
        ),
        (
            "listeners on a builtin gateway",
            gw(
                json!({"listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001}]}),
            ),
            want![(
                "networking.listeners",
                "listeners cannot be defined for builtin gateways",
            )],
        ),
        (
            "listeners and probes on a builtin gateway",
            {
                let mut v = gw(
                    json!({"listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001}]}),
                );
                v["probes"] = json!({"port": 9000});
                v
            },
            want![
                (
                    "networking.listeners",
                    "listeners cannot be defined for builtin gateways",
                ),
                (
                    "networking.probes",
                    "probes cannot be defined for builtin gateways",
                ),
            ],
        ),
        (
            "builtin gateway without service tag",
            net(json!({"gateway": {"type": "BUILTIN", "tags": {"foo": "bar"}}})),
            want![(
                "networking.gateway.tags",
                "mandatory tag \"kuma.io/service\" is missing",
            )],
        ),
        (
            "inbound ports out of range",
            net(json!({"inbound": [{"tags": svc("a")}, {"port": 65536, "tags": svc("b")}]})),
            want![
                ("networking.inbound[0].port", PORT),
                ("networking.inbound[1].port", PORT),
            ],
        ),
        (
            "servicePort out of range",
            net(json!({"inbound": [{"port": 8080, "servicePort": 65536, "tags": svc("a")}]})),
            want![("networking.inbound[0].servicePort", PORT)],
        ),
        (
            "inbound address not an IP",
            net(
                json!({"inbound": [{"port": 1234, "address": "invalid-address", "tags": svc("a")}]}),
            ),
            want![(
                "networking.inbound[0].address",
                "address has to be valid IP address",
            )],
        ),
        (
            "tagged inbound without service",
            net(json!({"inbound": [{"port": 1234, "tags": {"version": "v1"}}]})),
            want![(
                "networking.inbound[0].tags[\"kuma.io/service\"]",
                "tag has to exist",
            )],
        ),
        (
            "null tag value",
            net(
                json!({"inbound": [{"port": 1234, "tags": {"kuma.io/service": "a", "version": null}}]}),
            ),
            want![(
                "networking.inbound[0].tags[\"version\"]",
                "tag value must be non-empty",
            )],
        ),
        (
            "null protocol tag",
            net(
                json!({"inbound": [{"port": 1234, "tags": {"kuma.io/service": "a", "kuma.io/protocol": null}}]}),
            ),
            want![
                (
                    "networking.inbound[0].tags[\"kuma.io/protocol\"]",
                    "tag \"kuma.io/protocol\" has an invalid value \"\". Allowed values: grpc, http, http2, kafka, tcp",
                ),
                (
                    "networking.inbound[0].tags[\"kuma.io/protocol\"]",
                    "tag value must be non-empty",
                ),
            ],
        ),
        (
            "unsupported protocol",
            net(
                json!({"inbound": [{"port": 1234, "tags": {"kuma.io/service": "a", "kuma.io/protocol": "not-yet-supported-protocol"}}]}),
            ),
            want![(
                "networking.inbound[0].tags[\"kuma.io/protocol\"]",
                "tag \"kuma.io/protocol\" has an invalid value \"not-yet-supported-protocol\". Allowed values: grpc, http, http2, kafka, tcp",
            )],
        ),
        (
            "delegated gateway without service",
            net(json!({"gateway": {"tags": {"version": "v1"}}})),
            want![(
                "networking.gateway.tags",
                "mandatory tag \"kuma.io/service\" is missing",
            )],
        ),
        (
            "gateway null tag value",
            net(json!({"gateway": {"tags": {"kuma.io/service": "gw", "version": null}}})),
            want![(
                "networking.gateway.tags[\"version\"]",
                "tag value must be non-empty",
            )],
        ),
        (
            "gateway protocol http",
            net(
                json!({"gateway": {"tags": {"kuma.io/service": "gw", "kuma.io/protocol": "http"}}}),
            ),
            want![(
                "networking.gateway.tags[\"kuma.io/protocol\"]",
                "other values than tcp are not allowed, provided value \"http\"",
            )],
        ),
        (
            "outbound port only",
            net(json!({"outbound": [{"port": 3333}]})),
            want![(
                "networking.outbound[0].tags",
                "mandatory tag \"kuma.io/service\" is missing",
            )],
        ),
        (
            "outbound without service tag",
            net(json!({"outbound": [{"port": 3333, "tags": {"version": "v1"}}]})),
            want![(
                "networking.outbound[0].tags",
                "mandatory tag \"kuma.io/service\" is missing",
            )],
        ),
        (
            "outbound ports out of range",
            net(json!({"outbound": [{"tags": svc("a")}, {"port": 65536, "tags": svc("b")}]})),
            want![
                ("networking.outbound[0].port", PORT),
                ("networking.outbound[1].port", PORT),
            ],
        ),
        (
            "outbound address not an IP",
            net(json!({"outbound": [{"port": 3333, "address": "invalid", "tags": svc("a")}]})),
            want![(
                "networking.outbound[0].address",
                "address has to be valid IP address",
            )],
        ),
        (
            "tag name charset",
            net(
                json!({"inbound": [{"port": 1234, "tags": {"kuma.io/service": "a", "inv@lidT/gN%me": "value"}}]}),
            ),
            want![(
                "networking.inbound[0].tags[\"inv@lidT/gN%me\"]",
                "tag name must consist of alphanumeric characters, dots, dashes, slashes and underscores",
            )],
        ),
        (
            "tag value charset",
            net(
                json!({"inbound": [{"port": 1234, "tags": {"kuma.io/service": "a", "invalidTagValue": "inv@lid+t@g"}}]}),
            ),
            want![(
                "networking.inbound[0].tags[\"invalidTagValue\"]",
                "tag value must consist of alphanumeric characters, dots, dashes and underscores",
            )],
        ),
        (
            "serviceAddress not an IP",
            net(
                json!({"inbound": [{"port": 1234, "serviceAddress": "INVALID", "tags": svc("a")}]}),
            ),
            want![(
                "networking.inbound[0].serviceAddress",
                "serviceAddress has to be valid IP address",
            )],
        ),
        (
            "serviceAddress equals networking.address without servicePort",
            net(
                json!({"inbound": [{"port": 10001, "serviceAddress": "192.168.0.1", "tags": svc("a")}]}),
            ),
            want![("networking.inbound[0].serviceAddress", DIFFER)],
        ),
        (
            "address equals serviceAddress without servicePort",
            net(
                json!({"inbound": [{"port": 10001, "address": "192.168.0.2", "serviceAddress": "192.168.0.2", "tags": svc("a")}]}),
            ),
            want![("networking.inbound[0].serviceAddress", DIFFER)],
        ),
        (
            "quickstart redis with servicePort equal to port",
            json!({"networking": {"address": "127.0.0.1", "admin": {"port": 9903},
                "inbound": [{"port": 16379, "servicePort": 16379, "serviceAddress": "127.0.0.1", "tags": svc("redis")}]}}),
            want![("networking.inbound[0].serviceAddress", DIFFER)],
        ),
        (
            "probes",
            json!({"networking": {"address": "192.168.0.1", "inbound": [{"port": 8080, "tags": svc("a")}]},
                "probes": {"port": 0, "endpoints": [
                    {"inboundPort": 8080, "inboundPath": "/healthz", "path": "/8080/healthz"},
                    {"inboundPort": 99999999, "inboundPath": "healthz", "path": "8080/healthz"},
                    {"inboundPort": 8081, "inboundPath": "", "path": ""}]}}),
            want![
                ("probes.port", PORT),
                ("probes.endpoints[1].inboundPort", PORT),
                ("probes.endpoints[1].inboundPath", URL_PATH),
                ("probes.endpoints[1].path", URL_PATH),
                ("probes.endpoints[2].inboundPath", URL_PATH),
                ("probes.endpoints[2].path", URL_PATH),
            ],
        ),
        (
            "serviceProbe zero values",
            net(json!({"inbound": [{"port": 8080, "tags": svc("a"),
                "serviceProbe": {"interval": "0", "unhealthyThreshold": 0, "timeout": "1s", "healthyThreshold": 5}}]})),
            want![
                (
                    "networking.inbound[0].serviceProbe.interval",
                    "must have a positive value",
                ),
                (
                    "networking.inbound[0].serviceProbe.unhealthyThreshold",
                    "must have a positive value",
                ),
            ],
        ),
        (
            "admin port equal to an inbound port on 127.0.0.1",
            net(json!({"admin": {"port": 8080},
                "inbound": [{"port": 8080, "servicePort": 7777, "address": "127.0.0.1", "tags": svc("a")}]})),
            want![("networking.admin.port", "must differ from inbound")],
        ),
        (
            "admin port equal to an outbound port on 127.0.0.1",
            net(json!({"admin": {"port": 3333},
                "outbound": [{"port": 3333, "address": "127.0.0.1", "tags": svc("a")}]})),
            want![("networking.admin.port", "must differ from outbound")],
        ),
        (
            "admin port equal to an inbound port, listener on the loopback networking.address",
            json!({"networking": {"address": "127.0.0.1", "admin": {"port": 9903},
                "inbound": [{"port": 9903, "servicePort": 26379, "tags": svc("redis")}]}}),
            want![("networking.admin.port", "must differ from inbound")],
        ),
        (
            "admin port equal to the workload port on 127.0.0.1",
            json!({"networking": {"address": "10.0.0.5", "admin": {"port": 9903},
                "inbound": [{"port": 8080, "servicePort": 9903, "serviceAddress": "127.0.0.1", "tags": svc("redis")}]}}),
            want![("networking.admin.port", "must differ from inbound")],
        ),
        (
            "duplicate aggregate names",
            json!({"networking": {"address": "192.168.0.1", "inbound": [{"port": 8080, "tags": svc("a")}]},
                "metrics": {"type": "prometheus", "conf": {"aggregate": [
                    {"name": "app", "port": 123}, {"name": "app", "port": 124},
                    {"name": "duplicate-app", "port": 125}, {"name": "duplicate-app", "port": 126}]}}}),
            want![
                (
                    "metrics.conf.aggregate[1].name",
                    "duplicate entry: app, values have to be unique",
                ),
                (
                    "metrics.conf.aggregate[3].name",
                    "duplicate entry: duplicate-app, values have to be unique",
                ),
            ],
        ),
        (
            "unknown metrics backend type",
            json!({"networking": {"address": "192.168.0.1", "inbound": [{"port": 8080, "tags": svc("a")}]},
                "metrics": {"type": "custom-backend", "conf": {"port": 1234}}}),
            want![(
                "metrics.type",
                "unknown backend type. Available backends: \"prometheus\"",
            )],
        ),
        (
            "empty backendRef",
            net(json!({"outbound": [{"port": 3333, "backendRef": {}}]})),
            want![
                ("networking.outbound[0].backendRef.kind", KINDS),
                (
                    "networking.outbound[0].backendRef",
                    "either 'name' or 'labels' should be specified",
                ),
                ("networking.outbound[0].backendRef.port", PORT),
            ],
        ),
        (
            "backendRef with tags",
            net(json!({"outbound": [
                {"port": 3333, "tags": {"kuma.io/service": "xyz"}, "backendRef": {"kind": "MeshService", "name": "xyz", "port": 8080}},
                {"port": 3334, "tags": {"kuma.io/service": "xyz"}, "backendRef": {"kind": "MeshService", "name": "xyz"}}]})),
            want![
                (
                    "networking.outbound[0].backendRef",
                    "both backendRef and tags/service cannot be defined",
                ),
                ("networking.outbound[1].backendRef.port", PORT),
                (
                    "networking.outbound[1].backendRef",
                    "both backendRef and tags/service cannot be defined",
                ),
            ],
        ),
        (
            "reachable backends",
            net(
                json!({"transparentProxying": {"reachableBackends": {"refs": [
                {"kind": "Something", "name": "a", "labels": {"x": "y"}},
                {"kind": "MeshService", "name": "a", "namespace": "ns", "labels": {"x": "y"}},
                {"kind": "MeshService", "name": "a", "labels": {"x": "y"}},
                {"kind": "MeshService", "name": "first$-.kuma"},
                {"kind": "MeshService"},
                {"kind": "MeshService", "namespace": "ns"}]}}}),
            ),
            want![
                (format!("{TP}[0].kind"), KINDS),
                (
                    format!("{TP}[0].labels"),
                    "labels cannot be defined when name is specified",
                ),
                (
                    format!("{TP}[1].labels"),
                    "labels cannot be defined when name is specified",
                ),
                (
                    format!("{TP}[2].labels"),
                    "labels cannot be defined when name is specified",
                ),
                (
                    format!("{TP}[3].name"),
                    "invalid characters. A lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                ),
                (format!("{TP}[4].name"), "name or labels are required"),
                (
                    format!("{TP}[5].name"),
                    "name is required, when namespace is defined",
                ),
            ],
        ),
        (
            "listener without address",
            net(json!({"listeners": [{"type": "ZoneIngress", "port": 10001}]})),
            want![("networking.listeners[0].address", "address can't be empty")],
        ),
        (
            "listener port 0",
            net(
                json!({"listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 0}]}),
            ),
            want![("networking.listeners[0].port", PORT)],
        ),
        (
            "listener port 65536",
            net(
                json!({"listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 65536}]}),
            ),
            want![("networking.listeners[0].port", PORT)],
        ),
        (
            "listener address invalid",
            net(
                json!({"listeners": [{"type": "ZoneIngress", "address": "not-valid!", "port": 10001}]}),
            ),
            want![(
                "networking.listeners[0].address",
                "address has to be valid IP address or domain name",
            )],
        ),
        (
            "listener type unspecified",
            net(json!({"listeners": [{"address": "192.168.0.1", "port": 10001}]})),
            want![(
                "networking.listeners[0].type",
                "type must be ZoneIngress or ZoneEgress",
            )],
        ),
        (
            "listener named like an inbound",
            net(
                json!({"inbound": [{"port": 8080, "name": "http", "tags": svc("a")}],
                "listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001, "name": "http"}]}),
            ),
            want![(
                "networking.listeners[0].name",
                "name \"http\" must be unique across inbounds and listeners",
            )],
        ),
        (
            "two listeners with one name",
            net(json!({"listeners": [
                {"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001, "name": "zi-main"},
                {"type": "ZoneIngress", "address": "192.168.0.1", "port": 10002, "name": "zi-main"}]})),
            want![(
                "networking.listeners[1].name",
                "name \"zi-main\" must be unique across inbounds and listeners",
            )],
        ),
        (
            "ingress and egress on one address:port",
            net(json!({"listeners": [
                {"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001},
                {"type": "ZoneEgress", "address": "192.168.0.1", "port": 10001}]})),
            want![(
                "networking.listeners[1]",
                "address:port 192.168.0.1:10001 is used by listeners of different types",
            )],
        ),
        (
            "two ingress listeners on one address:port",
            net(json!({"listeners": [
                {"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001},
                {"type": "ZoneIngress", "address": "192.168.0.1", "port": 10001}]})),
            want![(
                "networking.listeners[1]",
                "address:port 192.168.0.1:10001 is already used by another listener",
            )],
        ),
        (
            "listener on an inbound's address:port",
            net(json!({"inbound": [{"port": 8080, "tags": svc("a")}],
                "listeners": [{"type": "ZoneIngress", "address": "192.168.0.1", "port": 8080}]})),
            want![(
                "networking.listeners[0]",
                "address:port 192.168.0.1:8080 collides with an inbound listener",
            )],
        ),
        (
            "inbound protocol field",
            net(json!({"inbound": [{"port": 8080, "protocol": "smtp"}]})),
            want![(
                "networking.inbound[0].protocol",
                "has an invalid value \"smtp\". Allowed values: grpc, http, http2, kafka, tcp",
            )],
        ),
    ];
    for (name, v, want) in rows {
        assert_eq!(check(v), want, "row {name:?}");
    }
    assert!(PROTO_HINT.starts_with("Allowed"));
}

#[test]
fn decoding_follows_protobuf_json() {
    // Proto field names next to the JSON names, quoted numbers, unknown fields.
    let v = json!({"networking": {"address": "10.0.0.1", "bogus": 1,
        "inbound": [{"port": "8080", "tags": svc("a"), "serviceProbe": {"unhealthy_threshold": 3}, "extra": "x"}],
        "transparent_proxying": {"redirect_port_inbound": 15006, "ip_family_mode": "DualStack"}}});
    let (dp, warnings) = wire::decode_spec::<Dataplane>(v, "").unwrap();
    dp.validate().unwrap();
    let inb = &dp.inbounds()[0];
    assert_eq!(inb.port, 8080);
    assert_eq!(
        inb.service_probe.as_ref().unwrap().unhealthy_threshold,
        Some(3)
    );
    let tp = dp
        .networking()
        .unwrap()
        .transparent_proxying
        .as_ref()
        .unwrap();
    assert_eq!(tp.redirect_port_inbound, 15006);
    // Enums by number, as jsonpb reads them.
    let (gw, _) = wire::decode_spec::<Dataplane>(
        json!({"networking": {"address": "10.0.0.1", "gateway": {"type": 1, "tags": svc("gw")}}}),
        "",
    )
    .unwrap();
    assert!(gw.gateway().unwrap().is_builtin());
    assert_eq!(
        warnings,
        [
            "unknown field \"bogus\" at networking: ignored",
            "unknown field \"extra\" at networking.inbound[0]: ignored"
        ]
    );
    // Errors Kuma's decoder raises, each with its field here.
    let err = wire::decode_spec::<Dataplane>(
        json!({"networking": {"address": "10.0.0.1", "gateway": {"type": "FOO"},
            "inbound": [{"port": -1, "tags": {"kuma.io/service": "a", "version": 1},
                "serviceProbe": {"interval": "10"}}]}}),
        "",
    )
    .unwrap_err();
    let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "networking.gateway.type",
            "networking.inbound[0].port",
            "networking.inbound[0].tags[\"version\"]",
            "networking.inbound[0].serviceProbe.interval"
        ],
        "{err}"
    );
}

#[test]
fn zone_tag_skips_tagless_inbounds() {
    let (mut d, _) = wire::decode_spec::<Dataplane>(
        json!({"networking": {"address": "10.0.0.1", "inbound": [
            {"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": "a"}},
            {"port": 81}]}}),
        "",
    )
    .unwrap();
    d.set_zone_tag("zone-1");
    assert_eq!(d.inbounds()[0].tags[ZONE_TAG], "zone-1");
    assert!(d.inbounds()[1].tags.is_empty());
    d.validate().unwrap();
}

#[test]
fn round_trips_through_the_wire_shape() {
    let v = json!({"networking": {"address": "10.0.0.1",
        "admin": {"port": 9901},
        "inbound": [{"port": 80, "servicePort": 8080, "tags": {"kuma.io/service": "a"},
            "serviceProbe": {"interval": "10s", "healthyThreshold": 2, "tcp": {}}}],
        "outbound": [{"port": 3333, "backendRef": {"kind": "MeshService", "name": "b", "port": 80}}],
        "gateway": null,
        "transparentProxying": {"redirectPortInbound": 15006, "reachableBackends": {"refs": [{"kind": "MeshService", "name": "b"}]}}},
        "metrics": {"type": "prometheus", "conf": {"port": 5670}}});
    let mut input = v.clone();
    wire::normalize_nulls(&mut input);
    let (dp, w) = wire::decode_spec::<Dataplane>(input.clone(), "").unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(serde_json::to_value(&dp).unwrap(), input);
}

#[test]
fn mesh_constraints() {
    let dp = |v: Value| wire::decode_spec::<Dataplane>(v, "").unwrap().0;
    let web = dp(net(json!({"inbound": [
        {"port": 80, "tags": {"kuma.io/service": "web", "env": "prod"}},
        {"port": 81, "tags": {"kuma.io/service": "web", "env": "dev"}}]})));
    let constraints = json!({"dataplaneProxy": {
        "requirements": [{"tags": {"kuma.io/service": "*"}}],
        "restrictions": [{"tags": {"env": "dev"}}]}});
    assert_eq!(
        web.membership_problem("default", Some(&constraints)),
        Some((
            "networking.inbound[1].tags".to_string(),
            "dataplane cannot be a member of mesh \"default\" because its tags \"env=dev kuma.io/service=web\" matches restricted tags \"env=dev\" defined on the Mesh".to_string()
        ))
    );
    let required = json!({"dataplaneProxy": {"requirements": [{"tags": {"team": "core"}}]}});
    assert_eq!(
        web.membership_problem("m", Some(&required)).map(|(_, m)| m),
        Some("dataplane cannot be a member of mesh \"m\" because its tags \"env=prod kuma.io/service=web\" does not fulfill any requirements defined on the Mesh".to_string())
    );
    let gateway = dp(net(
        json!({"gateway": {"tags": {"kuma.io/service": "edge", "team": "core"}}}),
    ));
    assert_eq!(gateway.membership_problem("m", Some(&required)), None);
    assert_eq!(web.membership_problem("m", None), None);
    assert_eq!(web.membership_problem("m", Some(&json!({}))), None);
}
