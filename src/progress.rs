//! Progress bars for stages that can take more than a second (reading shards, tracing,
//! scoring, solving, writing).
//!
//! Each bar names its stage and what it counts, with a total where one is known
//! (`reading shards 12/161`, `tracing tensors 80/314`, `scoring units 5/40`, `writing
//! 1.2 GiB/3.4 GiB`). A [`Progress`] stays invisible until its stage has run for
//! [`show_after`] (one second, or `WEIGHTMAP_PROGRESS_AFTER_MS`), so quick runs print
//! nothing; it is never drawn when [`set_quiet`] was called (`--quiet`) or when stderr is
//! not a terminal (pipes, CI logs, tests). It is cheap to update from many threads: clones
//! share one bar.
//!
//! ```
//! let p = weightmap::progress::Progress::new(3, "scoring");
//! for _ in 0..3 {
//!     p.inc(1);
//! }
//! p.finish();
//! ```

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stage runs before its bar appears by default: shorter stages never draw one.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);

/// How long a stage runs before its bar appears: [`SHOW_AFTER`], or the milliseconds in
/// the environment variable `WEIGHTMAP_PROGRESS_AFTER_MS` (0 shows every bar at once).
pub fn show_after() -> Duration {
    static AFTER: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *AFTER.get_or_init(|| {
        std::env::var("WEIGHTMAP_PROGRESS_AFTER_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(SHOW_AFTER, Duration::from_millis)
    })
}

/// Whether bars may be drawn at all in this process: not `--quiet`, stderr a terminal.
pub fn drawing_allowed() -> bool {
    !is_quiet() && std::io::stderr().is_terminal()
}

/// Set by `--quiet`: no bar is drawn anywhere in the process.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Hides (true) or allows (false) every progress bar of the process.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether bars are hidden by [`set_quiet`].
pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A progress bar for one stage; see the module documentation.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    /// False when the bar must never be drawn (quiet, or stderr not a terminal).
    allowed: bool,
    /// Set once the bar has been attached to stderr.
    shown: Arc<AtomicBool>,
    start: Instant,
}

impl Progress {
    /// A bar for `stage` (what is done and what is counted: "reading shards", "scoring
    /// units") that counts to `len`.
    pub fn new(len: u64, stage: &str) -> Self {
        Self::with_visibility(len, stage, drawing_allowed())
    }

    /// A bar for `stage` that counts bytes up to `total` (shown as `1.2 GiB/3.4 GiB`).
    pub fn bytes(total: u64, stage: &str) -> Self {
        let p = Self::new(total, stage);
        p.bar.set_style(style(
            "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} [{elapsed}<{eta}]",
        ));
        p
    }

    /// A spinner for a stage whose length is not known in advance (it shows the elapsed
    /// time, and the count when the stage reports one).
    pub fn spinner(stage: &str) -> Self {
        let p = Self::new(0, stage);
        p.bar
            .set_style(style("{spinner} {prefix} {msg}[{elapsed}]").tick_chars("|/-\\ "));
        p
    }

    /// As [`Progress::new`], with the decision to draw made by the caller (tests).
    pub fn with_visibility(len: u64, stage: &str, allowed: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        bar.set_style(style(
            "{prefix:>16} [{bar:30}] {pos}/{len} [{elapsed}<{eta}]",
        ));
        bar.set_prefix(stage.to_string());
        Progress {
            bar,
            allowed,
            shown: Arc::new(AtomicBool::new(false)),
            start: Instant::now(),
        }
    }

    /// Advances by `n` steps; draws the bar once the stage has run for [`SHOW_AFTER`].
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.maybe_show();
    }

    /// Sets the position to `pos` steps.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.maybe_show();
    }

    /// Changes the total (when it becomes known).
    pub fn set_length(&self, len: u64) {
        self.bar.set_length(len);
    }

    /// The current position.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Whether the bar is drawn on stderr now.
    pub fn is_visible(&self) -> bool {
        self.shown.load(Ordering::Relaxed)
    }

    /// Ends the stage and erases the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Runs `work`, a step that reports no progress of its own (loading a TorchScript
    /// archive inside libtorch), under a spinner for `stage`: a helper thread ticks it, so
    /// it appears once the step has run for [`show_after`] and is erased when the step ends.
    pub fn while_running<T>(stage: &str, work: impl FnOnce() -> T) -> T {
        Self::while_counting(stage, None, || None, work)
    }

    /// As [`Progress::while_running`], for a step whose count another thread can read
    /// while it runs (`poll`: ops seen so far, say) and whose `total` may be known: the
    /// spinner shows `count/total`.
    pub fn while_counting<T>(
        stage: &str,
        total: Option<u64>,
        poll: impl Fn() -> Option<u64> + Sync,
        work: impl FnOnce() -> T,
    ) -> T {
        let p = Self::spinner(stage);
        let done = AtomicBool::new(false);
        let out = std::thread::scope(|scope| {
            let ticker = scope.spawn(|| loop {
                // Checked after a first look, so a bar allowed at once is drawn at once.
                if let Some(n) = poll() {
                    p.bar.set_message(match total {
                        Some(t) => format!("{n}/{t} "),
                        None => format!("{n} "),
                    });
                }
                p.maybe_show();
                p.bar.tick();
                if done.load(Ordering::Acquire) {
                    break;
                }
                std::thread::park_timeout(Duration::from_millis(100));
            });
            let out = work();
            done.store(true, Ordering::Release);
            // Wake the ticker now rather than after its sleep: short steps cost nothing.
            ticker.thread().unpark();
            out
        });
        p.finish();
        out
    }

    fn maybe_show(&self) {
        if self.allowed
            && !self.shown.load(Ordering::Relaxed)
            && self.start.elapsed() >= show_after()
            && !is_quiet()
        {
            // Only one thread attaches the bar.
            if !self.shown.swap(true, Ordering::Relaxed) {
                self.bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }
}

/// A bar style from a constant template (it cannot fail to parse; the default otherwise).
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_stays_hidden_when_not_allowed() {
        let p = Progress::with_visibility(10, "scoring", false);
        let clone = p.clone();
        std::thread::scope(|s| {
            s.spawn(|| clone.inc(4));
            s.spawn(|| p.inc(5));
        });
        assert_eq!(p.position(), 9);
        std::thread::sleep(SHOW_AFTER + Duration::from_millis(10));
        p.inc(1);
        assert_eq!(p.position(), 10);
        assert!(
            !p.is_visible(),
            "a bar that is not allowed must never be drawn"
        );
        p.finish();
    }

    #[test]
    fn while_running_returns_what_the_work_returns() {
        // Bars are hidden in tests (stderr is not a terminal); the work runs once and its
        // value comes back, after the ticking helper has stopped.
        let mut runs = 0;
        let v = Progress::while_running("tracing", || {
            runs += 1;
            std::thread::sleep(Duration::from_millis(250));
            42
        });
        assert_eq!((v, runs), (42, 1));
    }

    #[test]
    fn allowed_bar_appears_only_after_the_delay() {
        let p = Progress::with_visibility(3, "solving", true);
        p.inc(1);
        assert!(
            !p.is_visible(),
            "stages shorter than SHOW_AFTER draw nothing"
        );
        std::thread::sleep(SHOW_AFTER + Duration::from_millis(10));
        p.inc(1);
        assert!(p.is_visible());
        p.finish();
    }
}

/// Wall times of a run's stages, printed to stderr as `timing: STAGE SECONDS` lines when
/// the environment variable `WEIGHTMAP_TIMINGS` is set (the scale benchmark reads them);
/// silent otherwise.
#[derive(Debug)]
pub struct StageClock {
    last: Instant,
    on: bool,
}

impl StageClock {
    /// Starts timing the first stage.
    pub fn start() -> Self {
        StageClock {
            last: Instant::now(),
            on: std::env::var_os("WEIGHTMAP_TIMINGS").is_some(),
        }
    }

    /// Ends `stage` (printing its time when enabled) and starts the next one.
    pub fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        if self.on {
            eprintln!("timing: {stage} {:.3}", (now - self.last).as_secs_f64());
        }
        self.last = now;
    }
}
