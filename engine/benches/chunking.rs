//! Chunking throughput, split into its two costs (FastCDC cut points, blake3 per chunk), a
//! file hashed again after a small edit (by blake3, and by the prints a live source keeps),
//! and the cost of `diff` on a pair of 10k-entry indexes.
//!
//! Run with `cargo bench -p ferry-engine --bench chunking`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferry_engine::chunk::cut_lengths;
use ferry_engine::{
    chunk_reader, diff, ChunkId, ChunkParams, ChunkRef, Content, DiffOptions, DiffOutcome,
    EntryKind, EntryState, FileEntry, Index, MtimeNs, RelPath, Seq, SourceDir, VersionVector,
};

const MIB: usize = 1 << 20;

/// Incompressible, reproducible bytes (xorshift64), so cut points fall as on real data.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let data = pseudo_random(64 * MIB, 42);
    let params = ChunkParams::default();
    let lens = cut_lengths(&data, &params);
    let content = chunk_reader(&data[..], &params).unwrap();
    assert_eq!(
        content
            .chunks
            .iter()
            .map(|c| c.len as usize)
            .collect::<Vec<_>>(),
        lens
    );

    let mut g = c.benchmark_group("chunking 64 MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("chunk_reader (cut + blake3)", |b| {
        b.iter(|| chunk_reader(black_box(&data[..]), &params).unwrap())
    });
    g.bench_function("fastcdc cut only", |b| {
        b.iter(|| cut_lengths(black_box(&data), &params))
    });
    g.bench_function("blake3 only (same chunks)", |b| {
        b.iter(|| {
            let mut start = 0;
            for &n in &lens {
                black_box(ChunkId::of(&data[start..start + n]));
                start += n;
            }
        })
    });
    g.bench_function("blake3 only (whole buffer)", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    g.finish();
}

/// A 256 MiB file with 4 KiB overwritten in the middle, hashed again knowing its previous
/// chunk list: the Differ's work for a live edit. With prints the unchanged chunks are
/// found by xxh3 instead of blake3 (the file is in the page cache, as after an edit).
fn hash_again(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = RelPath::new("big").unwrap();
    let full = dir.path().join("big");
    let old = pseudo_random(256 * MIB, 7);
    let mut new = old.clone();
    new[128 * MIB..128 * MIB + 4096].fill(1);
    let params = ChunkParams::default();
    let plain = SourceDir::new(dir.path(), params);
    std::fs::write(&full, &old).unwrap();
    let (previous, _) = plain.hash_file(&path).unwrap();

    let mut g = c.benchmark_group("hash again 256 MiB after a 4 KiB edit");
    g.throughput(Throughput::Bytes(new.len() as u64));
    g.sample_size(10);
    g.bench_function("by blake3", |b| {
        std::fs::write(&full, &new).unwrap();
        b.iter(|| plain.hash_file_again(&path, Some(&previous)).unwrap())
    });
    g.bench_function("by prints", |b| {
        b.iter_batched(
            || {
                // The prints are those of the version hashed last: hash the old one first.
                let kept = SourceDir::new(dir.path(), params).keeping_prints();
                std::fs::write(&full, &old).unwrap();
                kept.hash_file(&path).unwrap();
                std::fs::write(&full, &new).unwrap();
                kept
            },
            |kept| kept.hash_file_again(&path, Some(&previous)).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn path(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn dir(p: &str) -> FileEntry {
    FileEntry {
        path: path(p),
        kind: EntryKind::Dir,
        state: EntryState::Present,
        size: 0,
        mtime: MtimeNs(1_700_000_000_000_000_000),
        mode: 0o755,
        content: None,
        symlink_target: None,
        seq: Seq::default(),
        version: VersionVector::default(),
    }
}

/// A file whose (made-up) content is determined by `version`.
fn file(p: &str, size: u32, version: u64) -> FileEntry {
    let chunks = vec![ChunkRef {
        id: ChunkId::of(&version.to_le_bytes()),
        len: size,
    }];
    FileEntry {
        kind: EntryKind::File,
        size: u64::from(size),
        mtime: MtimeNs(1_700_000_000_000_000_000 + version as i64),
        mode: 0o644,
        content: Some(Content::from_chunks(&ChunkParams::default(), chunks)),
        ..dir(p)
    }
}

/// 100 directories of 99 files each: 10,000 entries.
fn tree(edit: impl Fn(usize, FileEntry) -> Option<FileEntry>) -> Index {
    let mut index = Index::new(ChunkParams::default());
    let mut n = 0;
    for d in 0..100 {
        index.insert(dir(&format!("d{d:03}")), None);
        for f in 0..99 {
            let e = file(&format!("d{d:03}/f{f:03}"), 1000 + n as u32, n as u64);
            if let Some(e) = edit(n, e) {
                index.insert(e, None);
            }
            n += 1;
        }
    }
    index
}

fn diff_bench(c: &mut Criterion) {
    let source = tree(|_, e| Some(e));
    assert_eq!(source.len(), 10_000);
    // 1% rewritten, 0.5% missing from the target, 0.5% moved to new names in the target.
    let target = tree(|n, mut e| match n % 200 {
        0 | 100 => {
            e.mtime.0 -= 1;
            e.content = Some(Content::from_chunks(&ChunkParams::default(), vec![]));
            Some(e)
        }
        50 => None,
        150 => {
            e.path = path(&format!("{}.old", e.path));
            Some(e)
        }
        _ => Some(e),
    });
    let opts = DiffOptions::default();
    for t in [&source, &target] {
        let DiffOutcome::Ready(plan) = diff(&source, t, opts) else {
            panic!("the bench indexes must be complete enough for a plan")
        };
        black_box(plan);
    }

    let mut g = c.benchmark_group("diff 10k entries");
    g.throughput(Throughput::Elements(source.len() as u64));
    g.bench_function("identical", |b| {
        b.iter(|| diff(black_box(&source), black_box(&source), opts))
    });
    g.bench_function("2% changed", |b| {
        b.iter(|| diff(black_box(&source), black_box(&target), opts))
    });
    g.finish();
}

criterion_group!(benches, chunking, hash_again, diff_bench);
criterion_main!(benches);
