//! Golden-file comparison for the crate's tests (generated Envoy config, bootstrap YAML):
//! `testdata/<rel>` must equal what the code generates; `UPDATE_GOLDEN=1` rewrites the files.

use std::path::Path;

/// Compares `got` with `testdata/<rel>` in this crate, or rewrites the file when
/// `UPDATE_GOLDEN` is set. A drift fails naming the file and the first differing line.
pub fn assert_golden(rel: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("testdata has a parent")).expect("mkdir");
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        panic!(
            "{} differs from the generated output at line {} (run with UPDATE_GOLDEN=1 to \
             accept):\n--- want\n{want}--- got\n{got}",
            path.display(),
            first + 1
        );
    }
}
