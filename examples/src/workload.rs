//! Deterministic benchmark workload generator.
//!
//! Modelled on `shared/bench/gen_tree.py` (`tree` sub-command) but self-contained:
//! it does not need Python or anything from `../shared` at run time, and it is fast
//! (the full tree, ~270 MiB, is written in a couple of seconds using all cores).
//!
//! The tree:
//!
//! * `full`: 10,000 files in 500 directories; `small`: 1,000 files in 50 directories;
//! * directories are nested up to 7 levels below the root, every directory picks a
//!   random earlier directory (or the root) as its parent;
//! * file sizes are log-normal (median 8 KiB, sigma 1.6) clamped to 1 KiB ..= 2 MiB,
//!   which gives ≈270 MiB in total for `full`;
//! * content is "source-code-like" text: slices of a 4 MiB pool of lines built from a
//!   small vocabulary, each slice followed by a unique hex token (so no two files are
//!   identical). `.dat`/`.bin` files (~20 %) additionally mix in incompressible pieces.
//!
//! Everything is a pure function of `(scale, seed)`: the same seed always yields the same
//! names, sizes and bytes (on a given platform; sizes go through `f64::exp`/`ln`).
//! The byte stream is *not* identical to the Python generator's (different PRNG), only
//! its shape is.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One kibibyte.
pub const KIB: u64 = 1 << 10;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// Smallest generated file size.
pub const MIN_SIZE: u64 = KIB;
/// Largest generated file size.
pub const MAX_SIZE: u64 = 2 * MIB;
/// Size of the shared text pool that file contents are sliced from.
pub const POOL_SIZE: usize = 4 * MIB as usize;
/// Maximum directory depth below the root.
pub const MAX_DEPTH: usize = 7;

const SYL: &[&str] = &[
    "ab", "ac", "ad", "al", "an", "ar", "as", "at", "be", "bi", "ca", "ce", "ch", "ci", "co", "cu",
    "da", "de", "di", "do", "el", "em", "en", "er", "es", "et", "fi", "fo", "ga", "ge", "gi", "ha",
    "he", "hi", "ic", "id", "il", "im", "in", "io", "ir", "is", "it", "la", "le", "li", "lo", "lu",
    "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "nu", "ob", "od", "of", "ol", "om", "on", "op",
    "or", "os", "ot", "ou", "pa", "pe", "pi", "po", "pr", "qu", "ra", "re", "ri", "ro", "ru", "sa",
    "se", "si", "so", "st", "su", "ta", "te", "th", "ti", "to", "tr", "tu", "ul", "um", "un", "ur",
    "us", "ut", "va", "ve", "vi", "vo", "xe", "yo", "ze",
];

const KW: &[&str] = &[
    "fn", "let", "mut", "if", "else", "for", "while", "return", "match", "impl", "struct", "pub",
    "use", "self", "const", "static", "def", "class", "import", "from", "int", "void", "char",
    "None", "True", "False", "=>", "->", "::", "==", "!=", "+=", "&&", "||", "{", "}", "(", ")",
    "[", "]", ";", ",", ".", "=", "+", "-", "*", "/", "<", ">", "0", "1", "2", "16", "64", "256",
];

const EXTS: &[&str] = &[
    "rs", "py", "c", "h", "txt", "json", "md", "dat", "bin", "toml",
];

// ---------------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------------

/// One step of SplitMix64: advances `state` and returns a well-mixed 64-bit value.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Small, fast, deterministic PRNG (xoshiro256**, seeded through SplitMix64).
///
/// Not cryptographic; only meant for reproducible workloads.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Creates a generator from a 64-bit seed.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = splitmix64(&mut sm);
        }
        Self { s }
    }

    /// Creates an independent generator for stream `stream` of `seed`.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut sm = seed ^ stream.wrapping_mul(0xD605_BBB5_8C8A_BBFD);
        let a = splitmix64(&mut sm);
        Self::new(a ^ stream)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform value in `0..n` (`n > 0`; multiply-shift, bias is negligible for our sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// Uniform index into a slice of length `len` (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniformly chosen element of a non-empty slice.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// Uniform `f64` in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal deviate (Box–Muller).
    pub fn gauss(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fills `buf` with random (incompressible) bytes.
    pub fn fill_bytes(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&v[..rest.len()]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------------------------

/// Workload size preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    /// ~10,000 files in ~500 directories, ≈270 MiB.
    #[default]
    Full,
    /// ~1,000 files in ~50 directories, ≈27 MiB.
    Small,
}

/// Numeric parameters of a [`Scale`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleParams {
    /// Number of regular files.
    pub files: usize,
    /// Number of directories (not counting the root).
    pub dirs: usize,
    /// Median file size in bytes.
    pub median: u64,
    /// Sigma of the log-normal size distribution.
    pub sigma: f64,
}

impl Scale {
    /// The parameters of this preset.
    pub fn params(self) -> ScaleParams {
        match self {
            Scale::Full => ScaleParams {
                files: 10_000,
                dirs: 500,
                median: 8 * KIB,
                sigma: 1.6,
            },
            Scale::Small => ScaleParams {
                files: 1_000,
                dirs: 50,
                median: 8 * KIB,
                sigma: 1.6,
            },
        }
    }

    /// The size of the preset's single large file (`gen_tree.py bigfile`): 1 GiB, or 128 MiB
    /// for the small preset.
    pub fn big_file_size(self) -> u64 {
        match self {
            Scale::Full => 1024 * MIB,
            Scale::Small => 128 * MIB,
        }
    }

    /// The preset's name (`"full"` or `"small"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Small => "small",
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Scale::Full),
            "small" => Ok(Scale::Small),
            other => Err(format!(
                "unknown scale {other:?} (expected \"full\" or \"small\")"
            )),
        }
    }
}

/// Log-normal size with the given median and sigma, clamped to [`MIN_SIZE`]..=[`MAX_SIZE`].
pub fn lognormal_size(rng: &mut Rng, median: u64, sigma: f64) -> u64 {
    let s = ((median as f64).ln() + sigma * rng.gauss()).exp();
    // `as` saturates for out-of-range floats, so this cannot wrap.
    (s as u64).clamp(MIN_SIZE, MAX_SIZE)
}

// ---------------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------------

/// Source of "source-code-like" file contents for one seed.
#[derive(Clone, Debug)]
pub struct Content {
    pool: Vec<u8>,
}

impl Content {
    /// Builds the text pool for `seed` (4 MiB; takes a few milliseconds).
    pub fn new(seed: u64) -> Self {
        Self::with_pool_size(seed, POOL_SIZE)
    }

    /// Like [`Content::new`] with a custom pool size (at least 4 KiB).
    pub fn with_pool_size(seed: u64, size: usize) -> Self {
        let size = size.max(4 * KIB as usize);
        let mut rng = Rng::derive(seed, 0x706f_6f6c); // "pool"
        let mut vocab: Vec<String> = (0..2000)
            .map(|_| {
                let n = rng.range(1, 4);
                (0..n).map(|_| *rng.choose(SYL)).collect()
            })
            .collect();
        let compounds: Vec<String> = (0..500)
            .map(|_| format!("{}_{}", rng.choose(&vocab), rng.choose(&vocab)))
            .collect();
        vocab.extend(compounds);
        let mut words: Vec<&str> = vocab.iter().map(String::as_str).collect();
        for _ in 0..8 {
            words.extend_from_slice(KW);
        }
        let mut pool = Vec::with_capacity(size + 256);
        while pool.len() < size {
            let indent = 4 * rng.below(5) as usize;
            pool.resize(pool.len() + indent, b' ');
            let k = rng.range(2, 12);
            for j in 0..k {
                if j > 0 {
                    pool.push(b' ');
                }
                pool.extend_from_slice(rng.choose(&words).as_bytes());
            }
            pool.push(b'\n');
        }
        pool.truncate(size);
        Self { pool }
    }

    /// The text pool.
    pub fn pool(&self) -> &[u8] {
        &self.pool
    }

    /// Replaces `out` with `size` bytes of content drawn from `rng`.
    ///
    /// Text pieces are 200..=3000-byte slices of the pool followed by a unique hex token;
    /// if `mixed`, 35 % of the pieces are 256..=4096 incompressible bytes instead.
    pub fn fill(&self, rng: &mut Rng, size: usize, mixed: bool, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(size + 4096 + 32);
        let pool = &self.pool;
        let max_piece = 3000.min(pool.len() as u64 - 1);
        while out.len() < size {
            if mixed && rng.next_f64() < 0.35 {
                let n = rng.range(256, 4096) as usize;
                let start = out.len();
                out.resize(start + n, 0);
                rng.fill_bytes(&mut out[start..]);
            } else {
                let ln = rng.range(200.min(max_piece), max_piece) as usize;
                let off = rng.index(pool.len() - ln);
                out.extend_from_slice(&pool[off..off + ln]);
                // Writing into a Vec cannot fail.
                let _ = writeln!(out, "{:x}", rng.next_u64());
            }
        }
        out.truncate(size);
    }
}

// ---------------------------------------------------------------------------------------------
// Tree plan and generation
// ---------------------------------------------------------------------------------------------

/// One file of a planned tree.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSpec {
    /// Path relative to the tree root.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Whether incompressible pieces are mixed in (`.dat` / `.bin`).
    pub mixed: bool,
    /// Seed of this file's private content stream.
    pub content_seed: u64,
}

/// A fully planned tree: everything except the file bytes, which [`TreePlan::file_bytes`]
/// derives on demand.
#[derive(Clone, Debug)]
pub struct TreePlan {
    /// Scale the plan was made for.
    pub scale: Scale,
    /// Seed the plan was made from.
    pub seed: u64,
    /// Directories relative to the root, parents before children (root not included).
    pub dirs: Vec<PathBuf>,
    /// Files, in generation order.
    pub files: Vec<FileSpec>,
}

/// Summary of a generated tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeStats {
    /// Number of regular files.
    pub files: usize,
    /// Number of directories (not counting the root).
    pub dirs: usize,
    /// Total bytes of file content.
    pub bytes: u64,
}

impl TreePlan {
    /// Plans the tree for `scale` and `seed` (cheap: no content is generated).
    pub fn new(scale: Scale, seed: u64) -> Self {
        let p = scale.params();
        let mut rng = Rng::derive(seed, 0x7472_6565); // "tree"
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(p.dirs);
        // depth[k] is the depth of candidate parent k; candidate 0 is the root.
        let mut depth: Vec<usize> = Vec::with_capacity(p.dirs + 1);
        depth.push(0);
        for i in 0..p.dirs {
            let parent = loop {
                let k = rng.index(dirs.len() + 1);
                if depth[k] < MAX_DEPTH {
                    break k;
                }
            };
            let name = format!("d{i:03}_{}{}", rng.choose(SYL), rng.choose(SYL));
            let path = if parent == 0 {
                PathBuf::from(name)
            } else {
                dirs[parent - 1].join(name)
            };
            dirs.push(path);
            depth.push(depth[parent] + 1);
        }
        let files = (0..p.files)
            .map(|i| {
                let d = &dirs[rng.index(dirs.len())];
                let ext = *rng.choose(EXTS);
                let size = lognormal_size(&mut rng, p.median, p.sigma);
                let name = format!("f{i:05}_{}.{ext}", rng.choose(SYL));
                FileSpec {
                    path: d.join(name),
                    size,
                    mixed: matches!(ext, "dat" | "bin"),
                    content_seed: rng.next_u64(),
                }
            })
            .collect();
        Self {
            scale,
            seed,
            dirs,
            files,
        }
    }

    /// The same tree (names, directories, contents' shape) with every file size clamped to
    /// `MIN_SIZE..=max`: e.g. `with_max_file_size(4 * KIB)` on the full plan gives a "light"
    /// tree of 10,000 small files (≈33 MiB instead of ≈270 MiB).
    pub fn with_max_file_size(mut self, max: u64) -> Self {
        let max = max.max(MIN_SIZE);
        for f in &mut self.files {
            f.size = f.size.min(max);
        }
        self
    }

    /// Total content bytes of the plan.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Summary numbers of the plan.
    pub fn stats(&self) -> TreeStats {
        TreeStats {
            files: self.files.len(),
            dirs: self.dirs.len(),
            bytes: self.total_bytes(),
        }
    }

    /// The text-pool source for this plan's seed.
    pub fn content(&self) -> Content {
        Content::new(self.seed)
    }

    /// Writes the bytes of `file` into `out` (replacing its contents).
    pub fn file_bytes(&self, content: &Content, file: &FileSpec, out: &mut Vec<u8>) {
        let mut rng = Rng::new(file.content_seed);
        content.fill(&mut rng, file.size as usize, file.mixed, out);
    }

    /// Creates the tree under `root` (created if missing; existing files are overwritten,
    /// unrelated files are left alone). Uses up to `threads` writer threads (0 = all cores).
    pub fn write(&self, root: &Path, threads: usize) -> io::Result<TreeStats> {
        fs::create_dir_all(root)?;
        for d in &self.dirs {
            fs::create_dir_all(root.join(d))?;
        }
        let content = self.content();
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        }
        .clamp(1, 16);
        let next = AtomicUsize::new(0);
        let first_err: Mutex<Option<io::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut buf = Vec::with_capacity((MAX_SIZE + 8 * KIB) as usize);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = self.files.get(i) else { break };
                        self.file_bytes(&content, file, &mut buf);
                        if let Err(e) = fs::write(root.join(&file.path), &buf) {
                            let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(io::Error::new(
                                e.kind(),
                                format!("writing {}: {e}", file.path.display()),
                            ));
                            // Make the other workers stop early.
                            next.store(usize::MAX / 2, Ordering::Relaxed);
                            break;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(self.stats())
    }
}

/// Plans and writes the benchmark tree for `scale`/`seed` under `root` using all cores.
pub fn gen_tree(root: &Path, scale: Scale, seed: u64) -> io::Result<TreeStats> {
    TreePlan::new(scale, seed).write(root, 0)
}

/// Writes `size` bytes of incompressible, seed-determined data to `path`
/// (the analogue of `gen_tree.py bigfile`), in 16 MiB buffered writes.
pub fn gen_incompressible_file(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent)?;
        }
    }
    let mut f = fs::File::create(path)?;
    let mut rng = Rng::derive(seed, 0x0062_6967); // "big"
    let mut buf = vec![0u8; (16 * MIB).min(size.max(1)) as usize];
    let mut left = size;
    while left > 0 {
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                if e.file_type().unwrap().is_dir() {
                    out.push((rel, Vec::new()));
                    walk(root, &p, out);
                } else {
                    out.push((rel, fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let mut c = Rng::new(43);
        let va: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        for _ in 0..10_000 {
            let x = a.range(3, 7);
            assert!((3..=7).contains(&x));
            let f = a.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn plan_matches_scale() {
        let plan = TreePlan::new(Scale::Small, 1);
        assert_eq!(plan.files.len(), 1_000);
        assert_eq!(plan.dirs.len(), 50);
        for d in &plan.dirs {
            assert!(d.components().count() <= MAX_DEPTH);
        }
        for f in &plan.files {
            assert!((MIN_SIZE..=MAX_SIZE).contains(&f.size));
        }
        // The full plan is cheap to compute; check its total is in the expected ballpark.
        let full = TreePlan::new(Scale::Full, 1);
        let mib = full.total_bytes() / MIB;
        assert!((200..=360).contains(&mib), "full tree is {mib} MiB");
    }

    #[test]
    fn max_file_size_clamps_only_sizes() {
        let full = TreePlan::new(Scale::Small, 3);
        let light = full.clone().with_max_file_size(4 * KIB);
        assert_eq!(full.dirs, light.dirs);
        assert_eq!(full.files.len(), light.files.len());
        for (a, b) in full.files.iter().zip(&light.files) {
            assert_eq!((&a.path, a.content_seed), (&b.path, b.content_seed));
            assert_eq!(b.size, a.size.min(4 * KIB));
        }
        assert!(light.total_bytes() < full.total_bytes());
        let tiny = TreePlan::new(Scale::Small, 3).with_max_file_size(1);
        assert!(tiny.files.iter().all(|f| f.size == MIN_SIZE));
    }

    #[test]
    fn same_seed_same_bytes_small_scale() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        let sa = gen_tree(a.path(), Scale::Small, 7).unwrap();
        // Different thread count must not change the result.
        let sb = TreePlan::new(Scale::Small, 7).write(b.path(), 1).unwrap();
        gen_tree(c.path(), Scale::Small, 8).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(sa.files, 1_000);
        let ta = read_tree(a.path());
        let tb = read_tree(b.path());
        let tc = read_tree(c.path());
        assert_eq!(ta.len(), 1_050);
        assert_eq!(
            sa.bytes,
            ta.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
        );
        assert!(ta == tb, "same seed produced different trees");
        assert!(ta != tc, "different seeds produced identical trees");
    }

    #[test]
    fn content_is_text_like_and_unique() {
        let content = Content::with_pool_size(1, 64 * KIB as usize);
        let mut a = Vec::new();
        let mut b = Vec::new();
        content.fill(&mut Rng::new(1), 20_000, false, &mut a);
        content.fill(&mut Rng::new(2), 20_000, false, &mut b);
        assert_eq!(a.len(), 20_000);
        assert_ne!(a, b);
        assert!(a.iter().all(|&c| c == b'\n' || (0x20..0x7f).contains(&c)));
        let mut m = Vec::new();
        content.fill(&mut Rng::new(3), 200_000, true, &mut m);
        assert_eq!(m.len(), 200_000);
        assert!(
            m.iter().any(|&c| c >= 0x80),
            "mixed content should contain binary bytes"
        );
    }

    #[test]
    fn incompressible_file_is_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let p1 = d.path().join("x/big1");
        let p2 = d.path().join("big2");
        gen_incompressible_file(&p1, 100_003, 5).unwrap();
        gen_incompressible_file(&p2, 100_003, 5).unwrap();
        let a = fs::read(&p1).unwrap();
        assert_eq!(a.len(), 100_003);
        assert_eq!(a, fs::read(&p2).unwrap());
    }
}
