//! The fuzz targets (`tests/fuzz`), replayed on stable over every committed
//! corpus and regression input: what a campaign (`make fuzz`) once found
//! stays fixed, and the targets keep compiling against the host's API.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_passes_its_target() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in targets::TARGETS {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.file_name().is_some_and(|n| n == ".keep") {
                    continue;
                }
                // A campaign running meanwhile replaces inputs it reduced.
                match std::fs::read(&path) {
                    Ok(input) => target(&input),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error.into()),
                }
                inputs += 1;
            }
        }
        assert!(inputs > 0, "no inputs for the {name} target");
    }
    Ok(())
}
