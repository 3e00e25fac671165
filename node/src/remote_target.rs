//! Remote destinations of `ferry sync` and `ferry watch`: `ferry://NODE_ID@HOST:PORT/NAME`
//! turned into the target a pipeline starts with.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use ferry_actors::{Stats, TargetSpec};
use ferry_engine::{ChunkParams, IgnoreRules};
use ferry_node::remote::client::{LinkOptions, RemoteSpec, Retry};
use ferry_node::remote::tls;
use ferry_node::remote::url::{is_remote, RemoteUrl};

/// The remote destination `dst` names, if it is one.
pub fn parse(dst: &Path) -> Result<Option<RemoteUrl>> {
    let Some(s) = dst.to_str().filter(|s| is_remote(s)) else {
        return Ok(None);
    };
    let url = s.parse::<RemoteUrl>().context("invalid remote target")?;
    Ok(Some(url))
}

/// What a sync or watch run asks of the remote target.
pub struct Wanted {
    /// The source's chunker parameters.
    pub params: ChunkParams,
    /// Compare content even when size and mtime agree.
    pub checksum: bool,
    /// Plan only.
    pub dry_run: bool,
    /// The folder's ignore rules, applied by the remote target too.
    pub ignore: IgnoreRules,
    /// Keep retrying (a live mirror) or give up soon (a one-shot sync).
    pub retry: Retry,
    /// The epoch of a source index kept between runs (`None`: a new one for this process).
    pub epoch: Option<u64>,
}

/// The target spec of a pipeline replicating to `url`, authenticated as this node.
pub fn spec(
    url: RemoteUrl,
    home: Option<&Path>,
    wanted: Wanted,
    stats: Arc<Stats>,
) -> Result<TargetSpec> {
    let identity = crate::id_cmd::load(&crate::id_cmd::home(home)?)?;
    let tls = tls::client_config(&identity, url.node).context("cannot set up TLS")?;
    let remote = RemoteSpec {
        url,
        tls,
        params: wanted.params,
        checksum: wanted.checksum,
        dry_run: wanted.dry_run,
        ignore: wanted.ignore,
        link: LinkOptions::default(),
        retry: wanted.retry,
        stats,
        epoch: wanted.epoch,
    };
    Ok(TargetSpec::Linked(remote.connector()))
}
