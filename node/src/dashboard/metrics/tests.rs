//! Tests of [`render`]: exact lines, escaping, cumulative buckets, and validity checked both by
//! `prometheus-parse` and by a strict line grammar (the crate skips lines it cannot read).

use std::collections::HashMap;

use prometheus_parse::{Scrape, Value};

use super::render;
use crate::status::{Counters, FolderStatus, Histogram, NodeStatus, SyncState, TargetStatus};

fn target(name: &str, state: SyncState) -> TargetStatus {
    TargetStatus {
        name: name.into(),
        kind: "local".into(),
        state,
        actors: Vec::new(),
        counters: Counters {
            files_created: 5,
            files_updated: 4,
            files_removed: 3,
            files_renamed: 2,
            metadata_only: 1,
            bytes_sent: 1_000,
            wire_bytes_out: 70,
            wire_bytes_in: 30,
            bytes_hashed: u64::MAX,
            ..Counters::default()
        },
        latency: Histogram {
            bounds_ms: vec![5.0, 250.0, 1000.0],
            counts: vec![2, 3, 0, 1],
            sum_ms: 2_500.0,
            count: 6,
        },
        restarts: 7,
        watches: 12,
        applied_seq: 40,
        source_seq: 42,
    }
}

fn status() -> NodeStatus {
    NodeStatus {
        node: "n1".into(),
        node_id: None,
        version: "0.1.0".into(),
        uptime_s: 99,
        folders: vec![FolderStatus {
            id: "docs".into(),
            path: "/srv/docs".into(),
            role: "send".into(),
            targets: vec![
                target("/mnt/backup", SyncState::InSync),
                target(
                    "odd \"name\" \\ with\nnewline",
                    SyncState::Failed {
                        reason: "disk full".into(),
                    },
                ),
            ],
        }],
        history: Vec::new(),
        events: Vec::new(),
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample of `metric` whose labels include all of `want`.
fn value(scrape: &Scrape, metric: &str, want: &[(&str, &str)]) -> Value {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && want.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {want:?}: {found:?}");
    found[0].value.clone()
}

#[test]
fn lines_have_the_exposition_format() {
    let text = render(&status());
    for line in [
        "# HELP ferry_uptime_seconds Seconds since the node started.",
        "# TYPE ferry_uptime_seconds gauge",
        "ferry_uptime_seconds 99",
        "# TYPE ferry_files_total counter",
        r#"ferry_files_total{folder="docs",target="/mnt/backup",action="renamed"} 2"#,
        r#"ferry_wire_bytes_total{folder="docs",target="/mnt/backup",direction="in"} 30"#,
        r#"ferry_bytes_hashed_total{folder="docs",target="/mnt/backup"} 18446744073709551615"#,
        r#"ferry_target_state{folder="docs",target="/mnt/backup",state="in-sync"} 1"#,
        r#"ferry_target_state{folder="docs",target="/mnt/backup",state="failed"} 0"#,
        "# TYPE ferry_change_latency_seconds histogram",
        r#"ferry_change_latency_seconds_sum{folder="docs",target="/mnt/backup"} 2.5"#,
        r#"ferry_change_latency_seconds_count{folder="docs",target="/mnt/backup"} 6"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.ends_with('\n'));
}

#[test]
fn label_values_are_escaped() {
    let text = render(&status());
    let want = r#"ferry_watches{folder="docs",target="odd \"name\" \\ with\nnewline"} 12"#;
    assert!(
        text.lines().any(|l| l == want),
        "missing {want:?} in\n{text}"
    );
}

#[test]
fn buckets_are_cumulative_in_seconds_and_end_with_inf() {
    let text = render(&status());
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("ferry_change_latency_seconds_bucket{folder=\"docs\",target=\"/mnt")
        })
        .collect();
    let labels = r#"folder="docs",target="/mnt/backup""#;
    assert_eq!(
        buckets,
        [
            format!("ferry_change_latency_seconds_bucket{{{labels},le=\"0.005\"}} 2"),
            format!("ferry_change_latency_seconds_bucket{{{labels},le=\"0.25\"}} 5"),
            format!("ferry_change_latency_seconds_bucket{{{labels},le=\"1\"}} 5"),
            format!("ferry_change_latency_seconds_bucket{{{labels},le=\"+Inf\"}} 6"),
        ]
    );
}

#[test]
fn prometheus_parse_reads_every_family_and_value() {
    let scrape = parse(&render(&status()));
    let t = [("folder", "docs"), ("target", "/mnt/backup")];
    let with = |extra: (&'static str, &'static str)| [t[0], t[1], extra];
    assert_eq!(
        value(&scrape, "ferry_uptime_seconds", &[]),
        Value::Gauge(99.0)
    );
    assert_eq!(
        value(&scrape, "ferry_files_total", &with(("action", "created"))),
        Value::Counter(5.0)
    );
    assert_eq!(
        value(&scrape, "ferry_files_total", &with(("action", "metadata"))),
        Value::Counter(1.0)
    );
    assert_eq!(
        value(&scrape, "ferry_bytes_sent_total", &t),
        Value::Counter(1000.0)
    );
    assert_eq!(
        value(
            &scrape,
            "ferry_wire_bytes_total",
            &with(("direction", "out"))
        ),
        Value::Counter(70.0)
    );
    assert_eq!(
        value(&scrape, "ferry_restarts_total", &t),
        Value::Counter(7.0)
    );
    assert_eq!(value(&scrape, "ferry_watches", &t), Value::Gauge(12.0));
    assert_eq!(value(&scrape, "ferry_applied_seq", &t), Value::Gauge(40.0));
    assert_eq!(
        value(&scrape, "ferry_target_state", &with(("state", "in-sync"))),
        Value::Gauge(1.0)
    );
    let Value::Histogram(buckets) = value(&scrape, "ferry_change_latency_seconds", &t) else {
        panic!("not a histogram");
    };
    let pairs: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
    assert_eq!(
        pairs,
        [(0.005, 2.0), (0.25, 5.0), (1.0, 5.0), (f64::INFINITY, 6.0)]
    );
    // Two targets × (5 file actions + 14 simple families + 2 directions + 6 states + sum
    // + count), two histograms, and the uptime.
    assert_eq!(scrape.samples.len(), 2 * (5 + 14 + 2 + 6 + 2) + 2 + 1);
}

#[test]
fn every_line_follows_the_strict_grammar() {
    let text = render(&status());
    let mut help = HashMap::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(help.insert(name, ()).is_none(), "second HELP for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(types.insert(name, kind).is_none(), "second TYPE for {name}");
        } else {
            let name = check_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(f) == Some(&"histogram"))
                })
                .unwrap_or(name);
            assert!(
                types.contains_key(family),
                "{name} comes before its TYPE line"
            );
        }
    }
    assert_eq!(help.len(), types.len());
}

/// Checks one sample line (`name{label="value",…} number`) and returns its metric name.
fn check_sample(line: &str) -> Result<&str, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = |s: &str| {
        s.chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
            && !s.is_empty()
    };
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        rest = labels;
        loop {
            let (key, after) = rest.split_once("=\"").ok_or("label without =\"")?;
            if !valid_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (_, '\\') => match chars.next() {
                        Some((_, '\\' | '"' | 'n')) => {}
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    (_, '\n') => return Err("raw line feed in a label value".into()),
                    (i, '"') => break i,
                    _ => {}
                }
            };
            rest = &after[end + 1..];
            match rest.chars().next() {
                Some(',') => rest = &rest[1..],
                Some('}') => {
                    rest = &rest[1..];
                    break;
                }
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
    }
    let number = rest.strip_prefix(' ').ok_or("no space before the value")?;
    match number {
        "+Inf" | "-Inf" | "NaN" => Ok(name),
        n if n.parse::<f64>().is_ok() && !n.contains(['i', 'I', 'N', 'n']) => Ok(name),
        n => Err(format!("bad value {n:?}")),
    }
}
