//! Progress for long work, one way everywhere: a live bar when stderr is a terminal; when
//! it is a file or a pipe (`memlog bench all > log 2>&1`, CI), a plain line at most every
//! [`LOG_EVERY`], so a long run's log still says where it is and how fast it goes.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// The most often a non-terminal progress line is written.
pub const LOG_EVERY: Duration = Duration::from_secs(20);

/// A progress bar over `len` steps of `what` (e.g. `"loading 100000 records"`), drawn on
/// stderr, or hidden when `visible` is false. `{msg}` (set with `set_message`) follows
/// the counts.
pub fn bar(len: u64, what: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let terminal = std::io::stderr().is_terminal();
    let (template, target) = if terminal {
        (
            "{prefix} [{elapsed_precise}] {bar:40} {pos}/{len} {per_sec} eta {eta} {msg}",
            ProgressDrawTarget::stderr(),
        )
    } else {
        (
            "{prefix}: {pos}/{len} ({percent}%) after {elapsed}, {per_sec}, eta {eta} {msg}",
            ProgressDrawTarget::term_like_with_hz(Box::new(LineLog::default()), 1),
        )
    };
    let b = ProgressBar::with_draw_target(Some(len), target);
    b.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_prefix(what.to_owned());
    b
}

/// A "terminal" that appends lines to stderr instead of redrawing one, and drops lines
/// that come sooner than [`LOG_EVERY`] after the last one it wrote.
#[derive(Debug, Default)]
struct LineLog {
    last: Mutex<Option<Instant>>,
}

impl TermLike for LineLog {
    fn width(&self) -> u16 {
        160
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    /// indicatif writes a bar's last (here: only) line with `write_str`, to keep the
    /// cursor on it; every draw is a whole line, so each becomes one line of the log.
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // The first draw is at position 0 and says nothing; wait one period for a rate.
        let now = Instant::now();
        match *last {
            None => *last = Some(now),
            Some(t) if now.duration_since(t) >= LOG_EVERY && !s.trim().is_empty() => {
                *last = Some(now);
                writeln!(std::io::stderr().lock(), "{s}")?;
            }
            Some(_) => {}
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
