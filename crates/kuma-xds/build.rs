//! With feature `json` only: compiles the part of the Envoy API the control plane generates
//! (and every file it imports) into a `FileDescriptorSet` at `$OUT_DIR/envoy_descriptors.bin`,
//! read by `kuma_xds::json`. Without the feature this script does nothing.
//!
//! The `.proto` sources are the ones the envoy-types crate ships in its package. envoy-types
//! has no `links` key (so no `DEP_*` metadata), so its directory is found as
//! `$CARGO_HOME/registry/src/*/envoy-types-<version>/proto`, the version read from the
//! workspace `Cargo.lock`. `ENVOY_TYPES_PROTO_DIR` overrides the search (vendored sources).

/// Envoy API files whose messages are generated or referenced from an `Any`; their imports
/// come along. Add a file here when the generator starts packing a new type.
#[cfg(feature = "json")]
const FILES: &[&str] = &[
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/matching/common_inputs/ssl/v3/ssl_inputs.proto",
    "envoy/extensions/matching/common_inputs/network/v3/network_inputs.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
];

/// Include roots inside envoy-types' `proto/` directory.
#[cfg(feature = "json")]
const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "googleapis",
    "protoc-gen-validate",
    "cel-spec/proto",
    "opentelemetry-proto",
];

/// Used when no `Cargo.lock` is found above the crate.
#[cfg(feature = "json")]
const FALLBACK_ENVOY_TYPES_VERSION: &str = "0.7.7";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Without feature `json` there is nothing to do (protox is not even a build dependency).
    if std::env::var_os("CARGO_FEATURE_JSON").is_some() {
        compile_descriptors();
    }
}

#[cfg(feature = "json")]
fn compile_descriptors() {
    if let Err(e) = descriptors::compile() {
        // A build script fails by exiting non-zero; Cargo shows what it printed.
        eprintln!("error: kuma-xds feature `json`: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "json"))]
fn compile_descriptors() {}

#[cfg(feature = "json")]
mod descriptors {
    use std::path::{Path, PathBuf};

    use super::{FALLBACK_ENVOY_TYPES_VERSION, FILES, INCLUDES};

    pub fn compile() -> Result<(), String> {
        let proto = proto_dir()?;
        let includes: Vec<PathBuf> = INCLUDES
            .iter()
            .map(|i| proto.join(i))
            .filter(|p| p.is_dir())
            .collect();
        let fds = protox::Compiler::new(&includes)
            .map_err(|e| format!("protox: {e}"))?
            .include_imports(true)
            .include_source_info(false)
            .open_files(FILES)
            .map_err(|e| format!("compiling the Envoy API from {}: {e:?}", proto.display()))?
            .encode_file_descriptor_set();
        let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?)
            .join("envoy_descriptors.bin");
        std::fs::write(&out, fds).map_err(|e| format!("writing {}: {e}", out.display()))
    }

    /// envoy-types' `proto/` directory.
    fn proto_dir() -> Result<PathBuf, String> {
        println!("cargo:rerun-if-env-changed=ENVOY_TYPES_PROTO_DIR");
        println!("cargo:rerun-if-env-changed=CARGO_HOME");
        if let Some(dir) = std::env::var_os("ENVOY_TYPES_PROTO_DIR") {
            let dir = PathBuf::from(dir);
            return if dir.join("data-plane-api").is_dir() {
                Ok(dir)
            } else {
                Err(format!(
                    "ENVOY_TYPES_PROTO_DIR={} has no data-plane-api/ directory",
                    dir.display()
                ))
            };
        }
        let version = envoy_types_version();
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .ok_or("neither CARGO_HOME nor HOME is set")?;
        let registry = cargo_home.join("registry").join("src");
        let wanted = format!("envoy-types-{version}");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&registry)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path().join(&wanted).join("proto"))
                    .filter(|p| p.join("data-plane-api").is_dir())
                    .collect()
            })
            .unwrap_or_default();
        // Several registries (mirrors) may hold the same version: any of them will do, but
        // pick one deterministically.
        found.sort();
        found.into_iter().next().ok_or_else(|| {
            format!(
                "the .proto files of {wanted} were not found: looked for {}/*/{wanted}/proto. \
                 Set ENVOY_TYPES_PROTO_DIR to envoy-types' proto/ directory.",
                registry.display()
            )
        })
    }

    /// The envoy-types version in the nearest `Cargo.lock` above this crate.
    fn envoy_types_version() -> String {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let lock = manifest.as_deref().and_then(|m| {
            m.ancestors()
                .map(|d| d.join("Cargo.lock"))
                .find(|p| p.is_file())
        });
        let Some(lock) = lock else {
            return FALLBACK_ENVOY_TYPES_VERSION.to_string();
        };
        println!("cargo:rerun-if-changed={}", lock.display());
        version_in_lock(&lock).unwrap_or_else(|| FALLBACK_ENVOY_TYPES_VERSION.to_string())
    }

    fn version_in_lock(lock: &Path) -> Option<String> {
        let text = std::fs::read_to_string(lock).ok()?;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim() == r#"name = "envoy-types""# {
                let v = lines.next()?.trim().strip_prefix("version = ")?;
                return Some(v.trim_matches('"').to_string());
            }
        }
        None
    }
}
