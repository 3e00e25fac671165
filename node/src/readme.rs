//! The README's "Embedding in an actix application" snippet, compiled (not run) as a doc
//! test so that it cannot rot; a unit test below checks that the README shows the same code.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use ferry_actors::{FolderId, Replication};
//! use ferry_engine::IgnoreRules;
//!
//! /// Call inside a running actix system (an actix-web handler, `#[actix::main]`, ...).
//! async fn mirror_photos() -> anyhow::Result<()> {
//!     let replication = Replication::builder(FolderId::new("photos")?, "/data/photos")
//!         .to_dir("/backup/photos")                 // or .to_target(name, TargetSpec::Linked(..))
//!         .ignore(IgnoreRules::new(&["*.tmp".into()])?)
//!         .start()?;
//!     let mut events = replication.subscribe();     // changes applied, actors, restarts, states
//!     actix::spawn(async move {
//!         while let Ok(event) = events.recv().await {
//!             println!("{event:?}");
//!         }
//!     });
//!     let status = replication.status().await;      // state, counters, actors, latency
//!     println!("{:?}", status.state);
//!     replication.stop(Duration::from_secs(10)).await;
//!     Ok(())
//! }
//! # fn main() {}
//! ```

#[cfg(test)]
mod tests {
    /// The lines of the first fenced block opening with `fence` after `heading` in `text`.
    fn block<'a>(text: &'a str, heading: &str, fence: &str) -> Vec<&'a str> {
        let after = &text[text.find(heading).expect("the heading")..];
        after
            .lines()
            .skip_while(|l| l.trim() != fence)
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .collect()
    }

    #[test]
    fn the_readme_shows_the_embedding_snippet_compiled_here() {
        let readme = block(
            include_str!("../../README.md"),
            "### Embedding in an actix application",
            "```rust",
        );
        // This file's doc comment, as rustdoc reads it.
        let doc_text: String = include_str!("readme.rs")
            .lines()
            .map(|l| l.strip_prefix("//!").unwrap_or(l))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let doc: Vec<&str> = block(&doc_text, "```no_run", "```no_run")
            .into_iter()
            .filter(|l| !l.starts_with("# "))
            .collect();
        assert!(
            !readme.is_empty(),
            "no rust block under the README's heading"
        );
        assert_eq!(readme, doc, "README.md and node/src/readme.rs differ");
    }
}
