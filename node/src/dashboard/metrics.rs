//! `/metrics`: a [`NodeStatus`] rendered in the Prometheus text exposition format 0.0.4.
//!
//! Every per-target series carries the labels `folder` and `target`; `ferry_uptime_seconds`
//! is the node's and has none. Each family gets one `# HELP` and one `# TYPE` line, followed
//! by its series for every target, so families never interleave.

use std::fmt::{self, Display, Write as _};

use crate::status::{Counters, FolderStatus, Histogram, NodeStatus, SyncState, TargetStatus};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A per-target counter or gauge taken straight from a [`TargetStatus`].
struct Simple {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&TargetStatus) -> u64,
}

/// The families with one series per target and no extra label, in output order.
const SIMPLE: &[Simple] = &[
    counter(
        "ferry_bytes_sent_total",
        "File content passed from the source side to the target side, in bytes.",
        |t| t.counters.bytes_sent,
    ),
    counter(
        "ferry_bytes_metadata_total",
        "Encoded bytes of every other message between the sides.",
        |t| t.counters.bytes_metadata,
    ),
    counter(
        "ferry_bytes_reused_total",
        "Bytes taken from data the target already held.",
        |t| t.counters.bytes_reused,
    ),
    counter(
        "ferry_bytes_written_total",
        "Bytes written into target files.",
        |t| t.counters.bytes_written,
    ),
    counter(
        "ferry_bytes_hashed_total",
        "Bytes read and hashed on the source side.",
        |t| t.counters.bytes_hashed,
    ),
    counter(
        "ferry_entries_sent_total",
        "Index entries sent to the target side.",
        |t| t.counters.entries_sent,
    ),
    counter(
        "ferry_chunks_sent_total",
        "Chunks passed from the source side to the target side.",
        |t| t.counters.chunks_sent,
    ),
    counter(
        "ferry_chunks_reused_total",
        "Chunks taken from data the target already held.",
        |t| t.counters.chunks_reused,
    ),
    counter(
        "ferry_reconnects_total",
        "Times the connection to the peer was re-established.",
        |t| t.counters.reconnects,
    ),
    counter(
        "ferry_restarts_total",
        "Times the target's supervisor restarted its pipeline.",
        |t| t.restarts,
    ),
    counter(
        "ferry_skipped_total",
        "Entries skipped (unreadable, special, non-UTF-8).",
        |t| t.counters.skipped,
    ),
    gauge("ferry_watches", "Directories watched for changes.", |t| {
        t.watches
    }),
    gauge(
        "ferry_applied_seq",
        "The last change sequence number applied on the target.",
        |t| t.applied_seq,
    ),
    gauge(
        "ferry_source_seq",
        "The last change sequence number seen on the source.",
        |t| t.source_seq,
    ),
];

const fn counter(
    name: &'static str,
    help: &'static str,
    value: fn(&TargetStatus) -> u64,
) -> Simple {
    Simple {
        name,
        kind: "counter",
        help,
        value,
    }
}

const fn gauge(name: &'static str, help: &'static str, value: fn(&TargetStatus) -> u64) -> Simple {
    Simple {
        name,
        kind: "gauge",
        help,
        value,
    }
}

/// Reads one count out of a target's [`Counters`].
type Count = fn(&Counters) -> u64;

/// The `action` label values of `ferry_files_total` and where each count comes from.
const FILE_ACTIONS: [(&str, Count); 5] = [
    ("created", |c| c.files_created),
    ("updated", |c| c.files_updated),
    ("removed", |c| c.files_removed),
    ("renamed", |c| c.files_renamed),
    ("metadata", |c| c.metadata_only),
];

/// Renders `status` as a Prometheus text exposition (format 0.0.4).
pub fn render(status: &NodeStatus) -> String {
    let targets: Vec<(&FolderStatus, &TargetStatus)> = status
        .folders
        .iter()
        .flat_map(|f| f.targets.iter().map(move |t| (f, t)))
        .collect();
    let mut out = String::new();

    header(
        &mut out,
        "ferry_uptime_seconds",
        "gauge",
        "Seconds since the node started.",
    );
    sample(&mut out, "ferry_uptime_seconds", &[], status.uptime_s);

    header(
        &mut out,
        "ferry_files_total",
        "counter",
        "Entries changed on the target, by action.",
    );
    for &(f, t) in &targets {
        for (action, count) in FILE_ACTIONS {
            let labels = [("folder", &*f.id), ("target", &*t.name), ("action", action)];
            sample(&mut out, "ferry_files_total", &labels, count(&t.counters));
        }
    }

    for family in SIMPLE {
        header(&mut out, family.name, family.kind, family.help);
        for &(f, t) in &targets {
            sample(&mut out, family.name, &labels(f, t), (family.value)(t));
        }
    }

    let wire = "ferry_wire_bytes_total";
    header(
        &mut out,
        wire,
        "counter",
        "Bytes on the network connection (below TLS), by direction.",
    );
    for &(f, t) in &targets {
        for (direction, n) in [
            ("out", t.counters.wire_bytes_out),
            ("in", t.counters.wire_bytes_in),
        ] {
            let labels = [
                ("folder", &*f.id),
                ("target", &*t.name),
                ("direction", direction),
            ];
            sample(&mut out, wire, &labels, n);
        }
    }

    let state = "ferry_target_state";
    header(
        &mut out,
        state,
        "gauge",
        "1 for the state the target is in, 0 for the others.",
    );
    for &(f, t) in &targets {
        for name in SyncState::NAMES {
            let labels = [("folder", &*f.id), ("target", &*t.name), ("state", name)];
            sample(&mut out, state, &labels, u8::from(t.state.name() == name));
        }
    }

    let latency = "ferry_change_latency_seconds";
    header(
        &mut out,
        latency,
        "histogram",
        "Time from a change on the source to its application on the target.",
    );
    for &(f, t) in &targets {
        histogram(&mut out, latency, &labels(f, t), &t.latency);
    }
    out
}

fn labels<'a>(f: &'a FolderStatus, t: &'a TargetStatus) -> [(&'static str, &'a str); 2] {
    [("folder", &f.id), ("target", &t.name)]
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", Escaped(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Writes the `_bucket` series (cumulative, ending with `+Inf`), `_sum` and `_count`, in
/// seconds. The `+Inf` bucket is `count`, as the format requires it to equal `_count`.
fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, bound_ms) in h.bounds_ms.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        let le = Float(bound_ms / 1000.0).to_string();
        let mut with_le = labels.to_vec();
        with_le.push(("le", &le));
        sample(out, &bucket, &with_le, cumulative);
    }
    let mut with_le = labels.to_vec();
    with_le.push(("le", "+Inf"));
    sample(out, &bucket, &with_le, h.count);
    sample(
        out,
        &format!("{name}_sum"),
        labels,
        Float(h.sum_ms / 1000.0),
    );
    sample(out, &format!("{name}_count"), labels, h.count);
}

/// A label value with `\`, `"` and line feeds escaped as the format requires.
struct Escaped<'a>(&'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A float as the format spells it: Go-style `+Inf`, `-Inf` and `NaN` for the special values.
struct Float(f64);

impl Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            x if x.is_nan() => f.write_str("NaN"),
            x if x == f64::INFINITY => f.write_str("+Inf"),
            x if x == f64::NEG_INFINITY => f.write_str("-Inf"),
            x => write!(f, "{x}"),
        }
    }
}

#[cfg(test)]
mod tests;
