//! The rule of the `# Layout` list in `lib.rs`, checked: a module imports
//! only modules listed above it, so no two modules import each other.
//! Imports are read as text (`crate::name`, `crate::{a, b}`), comments
//! left out.

use std::collections::HashMap;
use std::path::Path;

/// The modules of the `# Layout` list, bottom first.
fn layers(lib: &str) -> Vec<String> {
    lib.lines()
        .skip_while(|line| !line.starts_with("//! # Layout"))
        .take_while(|line| line.starts_with("//!"))
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// The top-level modules `source` names through `crate::`.
fn imports(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            found.extend(
                group
                    .split(',')
                    .filter_map(|item| item.trim().split("::").next())
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            );
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn modules_import_only_the_layers_below_them() -> anyhow::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&std::fs::read_to_string(src.join("lib.rs"))?);
    assert!(
        order.len() > 10,
        "the # Layout list was not found: {order:?}"
    );
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut files = Vec::new();
    sources(&src, &mut files)?;
    let mut upward = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src)?.to_string_lossy().into_owned();
        let module = relative
            .split('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_owned();
        if matches!(module.as_str(), "lib" | "main" | "layout_tests") {
            continue;
        }
        let Some(&own) = rank.get(module.as_str()) else {
            upward.push(format!(
                "{relative}: module '{module}' is not in the # Layout list"
            ));
            continue;
        };
        for import in imports(&std::fs::read_to_string(&file)?) {
            if rank.get(import.as_str()).is_some_and(|&r| r > own) {
                upward.push(format!(
                    "{relative} ({module}) imports {import}, a layer above it"
                ));
            }
        }
    }
    assert!(upward.is_empty(), "{}", upward.join("\n"));
    Ok(())
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let found = imports("use crate::a::B;\nuse crate::{b, c::D};\n// crate::z\nx(crate::d::f)");
    assert_eq!(found, ["a", "b", "c", "d"]);
}
