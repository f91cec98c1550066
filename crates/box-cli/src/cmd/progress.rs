//! Pull and push progress: a bar per layer on a terminal (indicatif), plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use box_image::digest::Digest;
use box_image::registry::PullProgress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Reports layer transfers the way the output allows.
pub struct LayerProgress {
    bars: Option<MultiProgress>,
    state: Mutex<HashMap<Digest, Option<ProgressBar>>>,
    quiet: bool,
}

impl LayerProgress {
    /// Bars when stderr is a terminal and not `quiet`; lines otherwise (none when `quiet`).
    pub fn new(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
        LayerProgress {
            bars,
            state: Mutex::new(HashMap::new()),
            quiet,
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
    }
}

impl PullProgress for LayerProgress {
    fn on_layer(&self, digest: &Digest, done: u64, total: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let entry = state.entry(digest.clone()).or_insert_with(|| {
            self.bars.as_ref().map(|m| {
                let bar = m.add(ProgressBar::new(total));
                bar.set_style(Self::style());
                bar.set_prefix(digest.short().to_string());
                bar
            })
        });
        if let Some(bar) = entry {
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    fn on_layer_done(&self, digest: &Digest, already_present: bool) {
        let bar = self
            .state
            .lock()
            .ok()
            .and_then(|mut s| s.remove(digest))
            .flatten();
        match bar {
            Some(bar) => bar.finish(),
            None if !self.quiet && self.bars.is_none() => eprintln!(
                "{} {}",
                digest.short(),
                if already_present {
                    "already present"
                } else {
                    "done"
                }
            ),
            None => {}
        }
    }
}
