//! In-memory stores for an Applier's target chunk lists, counting what is asked of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ferry_actors::persist::TargetStore;
use ferry_engine::{Content, RelPath, StatKey};

/// A target store in memory, counting what is asked of it; each write takes `delay`
/// (zero by default), so a caller that does not wait for its writes can be seen not to.
#[derive(Default)]
pub struct MemStore {
    /// How long each write takes.
    pub delay: Duration,
    /// What is saved.
    pub rows: Mutex<BTreeMap<RelPath, (StatKey, Content)>>,
    /// Loads asked for.
    pub loads: AtomicU64,
    /// Writes asked for.
    pub writes: AtomicU64,
    /// The paths the last load returned.
    pub loaded: Mutex<Vec<RelPath>>,
}

impl MemStore {
    /// The saved row of `path`.
    pub fn row(&self, path: &str) -> Option<(StatKey, Content)> {
        let path = RelPath::new(path).expect("a valid relative path");
        self.rows.lock().expect("store lock").get(&path).cloned()
    }

    /// The paths saved.
    pub fn paths(&self) -> Vec<RelPath> {
        self.rows
            .lock()
            .expect("store lock")
            .keys()
            .cloned()
            .collect()
    }
}

impl TargetStore for MemStore {
    fn load(&self) -> Result<Vec<(RelPath, StatKey, Content)>, String> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let rows = self.rows.lock().expect("store lock");
        *self.loaded.lock().expect("store lock") = rows.keys().cloned().collect();
        Ok(rows
            .iter()
            .map(|(p, (s, c))| (p.clone(), *s, c.clone()))
            .collect())
    }

    fn write(
        &self,
        upserts: &[(RelPath, StatKey, Content)],
        removed: &[RelPath],
        full: bool,
    ) -> Result<(), String> {
        std::thread::sleep(self.delay);
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut rows = self.rows.lock().expect("store lock");
        if full {
            rows.clear();
        }
        for p in removed {
            rows.remove(p);
        }
        for (p, s, c) in upserts {
            rows.insert(p.clone(), (*s, c.clone()));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
