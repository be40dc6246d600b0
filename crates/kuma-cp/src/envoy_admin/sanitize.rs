//! Kuma's config dump sanitising (`pkg/envoy/admin/sanitize.go`): the dataplane token that
//! the bootstrap sends to the CP as `authorization` initial metadata of the ADS (and HDS) gRPC
//! services is replaced by `[redacted]` wherever it appears in the dump. The rest of Envoy's
//! bytes (its pretty JSON) is kept as it is. Private keys need nothing here: Envoy itself
//! prints `[redacted]` for every sensitive field (inline private keys of listeners and
//! secrets).

use serde_json::Value;

/// What replaces each secret value.
pub const REDACTED: &str = "[redacted]";

/// The config dump with every `authorization` metadata value of the bootstrap's gRPC
/// services replaced; a body that is not a JSON config dump is returned unchanged.
pub fn config_dump(raw: &[u8]) -> Vec<u8> {
    let Ok(dump) = serde_json::from_slice::<Value>(raw) else {
        return raw.to_vec();
    };
    let mut secrets = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        let bootstrap = &config["bootstrap"];
        let services = [
            &bootstrap["dynamic_resources"]["ads_config"]["grpc_services"],
            &bootstrap["hds_config"]["grpc_services"],
        ];
        for svc in services.into_iter().filter_map(Value::as_array).flatten() {
            for md in svc["initial_metadata"].as_array().into_iter().flatten() {
                if md["key"].as_str() == Some("authorization")
                    && let Some(v) = md["value"].as_str()
                    && !v.is_empty()
                {
                    secrets.push(v.to_string());
                }
            }
        }
    }
    if secrets.is_empty() {
        return raw.to_vec();
    }
    let mut text = String::from_utf8_lossy(raw).into_owned();
    for s in secrets {
        // The value as it appears inside a JSON string (a token is plain base64url anyway).
        let encoded = serde_json::to_string(&s).unwrap_or_default();
        let inner = encoded.trim_start_matches('"').trim_end_matches('"');
        text = text.replace(inner, REDACTED);
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted_and_the_rest_is_kept_byte_for_byte() {
        let raw = br#"{
 "configs": [
  {
   "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
   "bootstrap": {
    "node": {
     "metadata": {
      "dataplane.proxyType": "dataplane"
     }
    },
    "dynamic_resources": {
     "ads_config": {
      "grpc_services": [
       {
        "envoy_grpc": {"cluster_name": "ads_cluster"},
        "initial_metadata": [
         {"key": "authorization", "value": "eyJhbGciOi.secret.sig"},
         {"key": "other", "value": "kept"}
        ]
       }
      ]
     }
    },
    "hds_config": {"grpc_services": [{"initial_metadata": [{"key": "authorization", "value": "hds-token"}]}]}
   }
  },
  {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "note": "eyJhbGciOi.secret.sig"}
 ]
}"#;
        let out = String::from_utf8(config_dump(raw)).unwrap();
        assert!(!out.contains("eyJhbGciOi.secret.sig"), "{out}");
        assert!(!out.contains("hds-token"), "{out}");
        assert_eq!(out.matches("[redacted]").count(), 3, "{out}");
        assert!(out.contains(r#"{"key": "other", "value": "kept"}"#));
        assert!(out.contains("\"dataplane.proxyType\": \"dataplane\""));
        let expected = String::from_utf8(raw.to_vec())
            .unwrap()
            .replace("eyJhbGciOi.secret.sig", "[redacted]")
            .replace("hds-token", "[redacted]");
        assert_eq!(out, expected);
    }

    #[test]
    fn bodies_without_a_token_or_not_json_are_unchanged() {
        let raw = br#"{"configs": [{"bootstrap": {"node": {}}}]}"#;
        assert_eq!(config_dump(raw), raw.to_vec());
        assert_eq!(config_dump(b"not json"), b"not json".to_vec());
    }
}
