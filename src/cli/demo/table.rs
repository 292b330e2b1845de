//! `kubectl get channelconnections -o wide`, the way the demo prints it.

use kube::Client;

use super::say;
use crate::cli::status::human_duration;

/// `kubectl get channelconnections -n NS -o wide`, rendered from the server-side Table.
pub(super) async fn print_table(client: &Client, ns: &str) -> Result<(), String> {
    let path = format!("/apis/relink.dev/v1alpha1/namespaces/{ns}/channelconnections");
    let table = get_table(client, &path).await?;
    say(&format!("$ kubectl get channelconnections -n {ns} -o wide"));
    say(&render_table(&table, jiff::Timestamp::now()));
    Ok(())
}

async fn get_table(client: &Client, path: &str) -> Result<serde_json::Value, String> {
    let mut req = kube::core::Request::new("/")
        .get("x", &Default::default())
        .map_err(|e| format!("cannot build a request: {e}"))?;
    *req.uri_mut() = path
        .parse()
        .map_err(|e| format!("bad request path {path}: {e}"))?;
    req.headers_mut().insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
    );
    let text = client
        .request_text(req)
        .await
        .map_err(|e| format!("cannot list the connections: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("the API answered something else: {e}"))
}

/// A `meta.k8s.io/v1` Table as `kubectl -o wide` prints it: every column, dates as ages.
fn render_table(table: &serde_json::Value, now: jiff::Timestamp) -> String {
    let empty = Vec::new();
    let columns = table["columnDefinitions"].as_array().unwrap_or(&empty);
    let rows = table["rows"].as_array().unwrap_or(&empty);
    if rows.is_empty() {
        return "No resources found.".to_owned();
    }
    let mut grid: Vec<Vec<String>> = vec![
        columns
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_uppercase())
            .collect(),
    ];
    for row in rows {
        let cells = row["cells"].as_array().unwrap_or(&empty);
        grid.push(
            columns
                .iter()
                .enumerate()
                .map(|(i, col)| cell(cells.get(i), col["type"].as_str(), now))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            grid.iter()
                .map(|r| r.get(i).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    grid.iter()
        .map(|r| {
            let line: String = r
                .iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s}{}   ", " ".repeat(w - s.chars().count())))
                .collect();
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn cell(v: Option<&serde_json::Value>, type_: Option<&str>, now: jiff::Timestamp) -> String {
    use serde_json::Value;
    match v {
        // kubectl leaves a custom column empty when its JSONPath finds nothing.
        None | Some(Value::Null) => String::new(),
        // The server usually sends dates as ages already ("62s"); a timestamp becomes one.
        Some(Value::String(s)) if type_ == Some("date") => match s.parse::<jiff::Timestamp>() {
            Ok(t) => human_duration(now.as_second() - t.as_second()),
            Err(_) => s.clone(),
        },
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_print_like_kubectl_wide() {
        let now: jiff::Timestamp = "2026-01-01T12:00:00Z".parse().expect("time");
        let table = json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "type": "string", "priority": 0},
                {"name": "READY", "type": "string", "priority": 0},
                {"name": "LAST CHECK", "type": "date", "priority": 0},
                {"name": "REAUTH URL", "type": "string", "priority": 1},
            ],
            "rows": [
                {"cells": ["a", "True", "2026-01-01T11:59:30Z", null]},
                {"cells": ["bb", "False", "5m", "http://x/y"]},
            ],
        });
        let text = render_table(&table, now);
        assert_eq!(
            text,
            "NAME   READY   LAST CHECK   REAUTH URL\n\
             a      True    30s\n\
             bb     False   5m           http://x/y"
        );
        assert_eq!(
            render_table(&json!({"rows": []}), now),
            "No resources found."
        );
    }
}
