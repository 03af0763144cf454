//! The house keeps its shape: every import inside `coord/src` runs to the same layer or a
//! lower one of the README's layer table, and no files import each other in a circle.
//!
//! Read from the code as it stands: each `use` line (and each path written out in code, such
//! as `crate::config::raw::RawValues`), resolved to the file that defines the item, through
//! `pub use` re-exports and globs. Test modules (from a line `#[cfg(test)]` on) are left out:
//! a test may reach anywhere. The table sits in the README between `<!-- layers -->` and
//! `<!-- /layers -->`: `| layer | files |` rows, the layer a number (decimals order the rooms
//! inside one layer), the files paths under `coord/src`, a folder ending in `/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, relative to `base`.
fn files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read coord/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(base).expect("under coord/src");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// `config/hub.rs` → `["config", "hub"]`; `config/mod.rs` → `["config"]`; `lib.rs` → `[]`.
fn module_of(file: &str) -> Vec<String> {
    let stem = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file before its test module, without comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The paths a `use` tree names: `a::{b::C, d}` → `a::b::C`, `a::d`.
fn expand(tree: &str) -> Vec<String> {
    // `X as Y` names X: drop each `as` and the name after it, then every space.
    let mut words = Vec::new();
    let mut skip = false;
    for word in tree.split_whitespace() {
        match (skip, word) {
            (true, name) => {
                // Keep what follows the new name (`,`, `}`).
                skip = false;
                words.push(name.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'));
            }
            (false, "as") => skip = true,
            _ => words.push(word),
        }
    }
    let tree: String = words.concat();
    let Some(open) = tree.find('{') else {
        return vec![tree.trim_end_matches("::").to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.len().saturating_sub(1)];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The `use` statements of `code` (their trees) and whether each is a `pub` one.
fn uses(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let lead = before[line_start..].trim();
        let statement = lead.is_empty() || lead.starts_with("pub");
        let after = &rest[at + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if statement {
            out.push((lead.starts_with("pub"), after[..end].to_owned()));
        }
        rest = &after[end..];
    }
    out
}

/// Paths written out in code: `crate::a::b::C`.
fn inline_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with('$') {
            continue;
        }
        let path: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.push(path.trim_end_matches(':').to_owned());
    }
    out
}

/// Items a file defines at any depth it could export them from.
fn definitions(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let mut words = line.split_whitespace().peekable();
        while let Some(word) = words.next() {
            let keyword = matches!(
                word,
                "struct"
                    | "enum"
                    | "fn"
                    | "type"
                    | "trait"
                    | "const"
                    | "static"
                    | "mod"
                    | "macro_rules!"
            );
            if let (true, Some(name)) = (keyword, words.peek()) {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    names
}

struct House {
    /// Module path → file.
    modules: HashMap<Vec<String>, String>,
    /// File → (its module, its code, what it defines, its re-exports: name → path, globs).
    files: BTreeMap<String, (Vec<String>, String, BTreeSet<String>)>,
}

impl House {
    fn read() -> House {
        let base = root().join("coord/src");
        let mut list = Vec::new();
        files(&base, &base, &mut list);
        let mut modules = HashMap::new();
        let mut files = BTreeMap::new();
        for file in list {
            let text = std::fs::read_to_string(base.join(&file)).expect("read a source file");
            let code = code(&text);
            let module = module_of(&file);
            modules.insert(module.clone(), file.clone());
            let defined = definitions(&code);
            files.insert(file, (module, code, defined));
        }
        House { modules, files }
    }

    /// `path` (as written in `module`) as a path from the crate root.
    fn absolute(&self, module: &[String], path: &str) -> Option<Vec<String>> {
        let mut parts = path.split("::").filter(|p| !p.is_empty());
        let first = parts.next()?;
        let mut out: Vec<String> = match first {
            "crate" => Vec::new(),
            "self" => module.to_vec(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            // A path from a module declared in this one (`use hub::X` inside config/mod.rs).
            other => {
                let mut inside = module.to_vec();
                inside.push(other.to_owned());
                if !self.modules.contains_key(&inside) {
                    return None;
                }
                inside
            }
        };
        for part in parts {
            match part {
                "super" => {
                    out.pop();
                }
                "self" => {}
                other => out.push(other.to_owned()),
            }
        }
        Some(out)
    }

    /// The file that defines what `path` names (`depth` bounds re-export chains).
    fn resolve(&self, path: &[String], depth: usize) -> Option<String> {
        // The deepest module the path walks through.
        let mut at = 0;
        while at < path.len() && self.modules.contains_key(&path[..=at]) {
            at += 1;
        }
        let module = path[..at].to_vec();
        let file = self.modules.get(&module)?.clone();
        let Some(item) = path.get(at) else {
            return Some(file);
        };
        let (_, code, defined) = &self.files[&file];
        if defined.contains(item) || depth == 0 {
            return Some(file);
        }
        for (public, tree) in uses(code) {
            if !public {
                continue;
            }
            for exported in expand(&tree) {
                let last = exported.rsplit("::").next().unwrap_or_default();
                let Some(target) = self.absolute(&module, &exported) else {
                    continue;
                };
                if last == item {
                    return self.resolve(&target, depth - 1).or(Some(file));
                }
                if last == "*" {
                    let mut inner = target[..target.len() - 1].to_vec();
                    inner.push(item.clone());
                    match self.resolve(&inner, depth - 1) {
                        Some(found) if found != file => return Some(found),
                        _ => {}
                    }
                }
            }
        }
        Some(file)
    }

    /// File → the files it imports.
    fn arrows(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut arrows = BTreeMap::new();
        for (file, (module, code, _)) in &self.files {
            let mut paths: Vec<(bool, String)> = uses(code)
                .into_iter()
                .flat_map(|(public, tree)| expand(&tree).into_iter().map(move |p| (public, p)))
                .collect();
            paths.extend(inline_paths(code).into_iter().map(|p| (false, p)));
            let mut to = BTreeSet::new();
            for (public, path) in paths {
                let Some(absolute) = self.absolute(module, &path) else {
                    continue;
                };
                // A module naming its own children's items as its face (`pub use child::X`)
                // is a declaration, not an import: the children import the module's code.
                if public && absolute.starts_with(module) && absolute.len() > module.len() + 1 {
                    continue;
                }
                match self.resolve(&absolute, 8) {
                    Some(target) if &target != file => {
                        to.insert(target);
                    }
                    _ => {}
                }
            }
            arrows.insert(file.clone(), to);
        }
        arrows
    }
}

/// The README's layer table: path (a file, or a folder ending in `/`) → (layer, its name).
fn layers() -> Vec<(String, f64, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let start = readme
        .find("<!-- layers -->")
        .expect("the README has a layer table");
    let end = readme
        .find("<!-- /layers -->")
        .expect("the layer table ends");
    let mut out = Vec::new();
    for row in readme[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(layer), Some(paths)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(number) = layer
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<f64>().ok())
        else {
            continue;
        };
        for path in paths.split(',') {
            let path = path.trim().trim_matches('`');
            if !path.is_empty() {
                out.push((path.to_owned(), number, (*layer).to_owned()));
            }
        }
    }
    out
}

/// The most specific table entry for `file`.
fn layer_of<'t>(
    table: &'t [(String, f64, String)],
    file: &str,
) -> Option<&'t (String, f64, String)> {
    table
        .iter()
        .filter(|(path, _, _)| {
            if path.ends_with('/') {
                file.starts_with(path.as_str())
            } else {
                file == path
            }
        })
        .max_by_key(|(path, _, _)| path.len())
}

/// A shortest path of imports from `start` back to itself, if there is one.
fn circle_through(arrows: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for next in arrows.get(at).into_iter().flatten() {
            if next == start {
                let mut path = vec![start.to_owned(), at.to_owned()];
                let mut back = at;
                while back != start {
                    back = came_from[back];
                    path.push(back.to_owned());
                }
                path.reverse();
                path.dedup();
                return Some(path);
            }
            if !came_from.contains_key(next.as_str()) && next != start {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

#[test]
fn every_import_runs_to_the_same_layer_or_below_and_no_files_import_each_other_in_a_circle() {
    let house = House::read();
    let arrows = house.arrows();
    let table = layers();
    let mut problems = Vec::new();
    for file in arrows.keys() {
        if layer_of(&table, file).is_none() {
            problems.push(format!("{file} is in no layer of the README's table"));
        }
    }
    for (from, targets) in &arrows {
        let Some((_, low, name)) = layer_of(&table, from) else {
            continue;
        };
        for to in targets {
            match layer_of(&table, to) {
                Some((_, high, to_name)) if high > low => problems.push(format!(
                    "{from} ({name}) imports {to} ({to_name}), a higher layer"
                )),
                _ => {}
            }
        }
    }
    // Circles: files from which a path of imports leads back to themselves.
    for start in arrows.keys() {
        if let Some(circle) = circle_through(&arrows, start) {
            problems.push(format!("a circle: {}", circle.join(" -> ")));
        }
    }
    let imports: usize = arrows.values().map(BTreeSet::len).sum();
    assert!(
        imports > 100,
        "the reading found only {imports} imports: the checker is broken, not the house"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_expands_use_trees_and_finds_statements() {
    assert_eq!(
        expand("crate::config::{hub::{RangeWatch, WatchHub}, raw::RawValue}"),
        [
            "crate::config::hub::RangeWatch",
            "crate::config::hub::WatchHub",
            "crate::config::raw::RawValue"
        ]
    );
    assert_eq!(
        expand("super::model::Release as Public"),
        ["super::model::Release"]
    );
    assert_eq!(expand("a::{B as C, d::E}"), ["a::B", "a::d::E"]);
    let code =
        "use a::b;\npub(crate) use c::{d, e};\nlet x = 1; // use f\nfn f() { g.use_it(); }\n";
    let found = uses(&self::code(code));
    assert_eq!(
        found,
        [(false, "a::b".to_owned()), (true, "c::{d, e}".to_owned())]
    );
}
