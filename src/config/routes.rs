//! Routes: the top-level settings make one; each `[[routes]]` table in the file another.
//!
//! A route names its own `listen` and `upstream`; every other route key it leaves out is
//! inherited from the top level (flags, env and file merged), so shared credentials are
//! written once. Process-wide keys cannot be set per route.

use ::config::{Map, Value, ValueKind};

use super::layers::Layered;
use super::{suggest, table};

/// Removes the file's `[[routes]]` tables from the top-level values and returns them;
/// unknown or process-wide keys in a table are reported here.
pub(super) fn take_tables(l: &mut Layered) -> Vec<Map<String, Value>> {
    let Some(value) = l.values.remove("routes") else {
        return Vec::new();
    };
    let ValueKind::Array(items) = value.kind else {
        l.errors.push(
            "config file: `routes` must be an array of tables: write each as [[routes]]".into(),
        );
        return Vec::new();
    };
    let mut tables = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let ValueKind::Table(table) = item.kind else {
            l.errors.push(format!(
                "config file: routes entry {} is not a table; write it as [[routes]]",
                i + 1
            ));
            continue;
        };
        let mut bad: Vec<&String> = table
            .keys()
            .filter(|k| !table::route_keys().any(|r| r == k.as_str()))
            .collect();
        bad.sort();
        let mut meant = Vec::new();
        for key in bad {
            let why = if table::find(key).is_some() {
                "is process-wide; set it at the top level of the file".to_owned()
            } else {
                let hint = suggest::hint(key, table::route_keys());
                meant.extend(hint.target().map(str::to_owned));
                format!("is not a route key: {}", hint.text(|k| format!("`{k}`")))
            };
            l.errors
                .push(format!("config file: [[routes]] #{}: `{key}` {why}", i + 1));
        }
        for required in ["listen", "upstream"] {
            // A typo of it was reported just above.
            if !table.contains_key(required) && !meant.iter().any(|m| m == required) {
                l.errors.push(format!(
                    "config file: [[routes]] #{} needs its own `{required}` (only the other route keys are inherited)",
                    i + 1
                ));
            }
        }
        tables.push(table);
    }
    tables
}

/// The layers one `[[routes]]` table sees (index 0-based), with its messages prefixed.
pub(super) fn layers_of(l: &Layered, index: usize, table: Map<String, Value>) -> Layered {
    let name = table
        .get("name")
        .and_then(|v| v.clone().into_string().ok())
        .map(|n| format!(" (`{n}`)"))
        .unwrap_or_default();
    l.route(format!("[[routes]] #{}{name}: ", index + 1), table)
}

/// The route's `name`, or `route-N` (1-based, as a person counts tables in the file).
pub(super) fn route_name(l: &mut Layered, index: usize) -> String {
    match l.string("name") {
        Some(name) if is_label(&name) => name,
        Some(_) => {
            l.problem(
                "name",
                "use letters, digits, '-' and '_' only (it becomes a metrics label)",
            );
            format!("route-{}", index + 1)
        }
        None => format!("route-{}", index + 1),
    }
}

fn is_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
