//! Invariants shared by several targets.

use kuma_core::Resource;
use serde_json::Value;

/// A valid resource decodes again from its own wire shape (what the API returns and
/// `kumactl get` prints) into the same resource, as a value and as JSON text.
pub fn wire_round_trip(res: &Resource) {
    let wire = res.to_wire();
    let again = Resource::from_wire(wire.clone(), Some(res.rtype()))
        .unwrap_or_else(|e| panic!("the wire shape of a valid resource is refused: {e}\n{wire}"));
    same_resource(res, &again, &wire);
    let text = serde_json::to_string(&wire).expect("a JSON value serializes");
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the wire JSON does not parse again: {e}\n{text}"));
    let again = Resource::from_wire(value, Some(res.rtype()))
        .unwrap_or_else(|e| panic!("the wire JSON of a valid resource is refused: {e}\n{text}"));
    same_resource(res, &again, &wire);
}

/// Name, mesh, labels and spec equal (times differ: each decode is a new resource).
pub fn same_resource(a: &Resource, b: &Resource, wire: &Value) {
    assert_eq!(a.key(), b.key(), "key changed through {wire}");
    assert_eq!(
        a.meta.labels, b.meta.labels,
        "labels changed through {wire}"
    );
    assert_eq!(a.spec, b.spec, "spec changed through {wire}");
}

/// JSON equality with numbers compared by value (`1` and `1.0` are the same number to
/// YAML readers and to protobuf `Struct`s).
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
