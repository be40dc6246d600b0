//! `Config`: Kuma's system resource holding one opaque string (global-scoped, mesh `""`).
//!
//! The control plane keeps its own state in it (Kuma: `kuma-cluster-id`, the VIP tables
//! `kuma-<mesh>-dns-vips`, see [`crate::vips`]). Users never see it: it has no REST path
//! ([`super::ResourceType::is_exposed`]), as Kuma registers it with an empty web-service path.

use serde::{Deserialize, Serialize};

/// Body of `Config`: `{"type": "Config", "name": ..., "config": "<string>"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSpec {
    #[serde(default, deserialize_with = "super::mesh::null_default")]
    pub config: String,
}

#[cfg(test)]
mod tests {
    use crate::resource::{Resource, ResourceType, Spec};
    use serde_json::json;

    #[test]
    fn wire_shape_is_kumas_system_config() {
        let doc = json!({"type": "Config", "name": "kuma-default-dns-vips", "config": "{\"a\":1}"});
        // A user document cannot name it (kumactl apply, PUT bodies)...
        assert!(Resource::from_wire(doc.clone(), None).is_err());
        // ...the store and KDS, which know the type, decode it.
        let r = Resource::from_wire(doc, Some(ResourceType::Config)).expect("decodes");
        assert_eq!(r.rtype(), ResourceType::Config);
        assert_eq!(r.meta.mesh, "");
        let Spec::Config(c) = &r.spec else {
            panic!("not a Config: {:?}", r.spec)
        };
        assert_eq!(c.config, "{\"a\":1}");
        let w = r.to_wire();
        assert_eq!(w["type"], "Config");
        assert_eq!(w["name"], "kuma-default-dns-vips");
        assert_eq!(w["config"], "{\"a\":1}");
        assert!(w.get("mesh").is_none(), "global-scoped: {w}");
        assert!(!ResourceType::Config.is_exposed());
        assert_eq!(
            ResourceType::from_name("Config"),
            Some(ResourceType::Config)
        );
        assert_eq!(ResourceType::from_ws_path(""), None);
        assert_eq!(ResourceType::from_cli_name("config"), None);
    }
}
