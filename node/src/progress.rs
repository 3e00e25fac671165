//! A progress bar on stderr for long one-shot work, drawn only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ferry_actors::Stats;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar that follows a run's [`Stats`] until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing when `enabled` and stderr is a terminal; otherwise does nothing.
    pub fn start(stats: Arc<Stats>, enabled: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (enabled && std::io::stderr().is_terminal()).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || draw(&stats, &stop))
        });
        Progress { stop, thread }
    }
}

fn draw(stats: &Stats, stop: &AtomicBool) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    while !stop.load(Ordering::Relaxed) {
        let (files_done, files, bytes, bytes_total) = stats.progress();
        bar.set_length(bytes_total);
        bar.set_position(bytes.min(bytes_total));
        bar.set_message(format!("{files_done}/{files} files"));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
