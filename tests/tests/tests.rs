//! Integration tests of Ferry: the `ferry` binary driven as a black box, and live replication
//! driven in-process through `ferry-actors`' public API. One test executable, one module per
//! area and topic.

mod util;

mod applier_view;
mod delta_edits;
mod delta_faults;
mod delta_property;
mod delta_reuse;
mod embed_web;
mod fault_disk;
mod fault_kill;
mod fault_link;
mod fault_source;
mod live_behind;
mod live_faults;
mod live_retry;
mod live_steps;
mod live_target_index;
mod node_cli;
mod node_config;
mod node_dashboard;
mod node_run;
mod node_three;
mod remote_bad_input;
mod remote_resume;
mod remote_sync;
mod remote_watch;
mod sync_coarse_times;
mod sync_dryrun;
mod sync_errors;
mod sync_ignore;
mod sync_initial;
mod sync_inline;
mod sync_meta;
mod sync_noop;
mod sync_pipelined;
mod sync_property;
mod sync_safety;
mod sync_skip;
mod sync_stale;
mod sync_state;
mod sync_state_saved;
mod watch_cli;
