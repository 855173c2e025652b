//! Where log lines go: stderr, written by a background thread so that request handling never
//! waits on `write(2)`.
//!
//! Lines are appended to a shared buffer; the writer thread writes the whole buffer at once
//! every [`FLUSH_INTERVAL`], or as soon as it holds [`FLUSH_BYTES`]. The buffer is bounded: a
//! line that finds [`MAX_BUFFER_BYTES`] already waiting (stderr is blocked) waits for the
//! writer, so nothing is dropped. Dropping the [`FlushGuard`] writes what is left.
//!
//! At full load this turns one `write(2)` per RPC into one per batch: about 3 % of contextd's
//! CPU per unary turn (see BENCHMARKS.md).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Longest a line waits before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// A buffer this full is written at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// A buffer this full makes new lines wait for the writer.
pub const MAX_BUFFER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread (buffer full, or closing).
    wake: Condvar,
    /// Wakes lines waiting for room.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind; keep logging.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`MakeWriter`] for `tracing_subscriber` that buffers lines for the writer thread.
#[derive(Clone)]
pub struct BufferedStderr {
    shared: Arc<Shared>,
}

/// Writes what is buffered and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BufferedStderr {
    /// Starts the writer thread. Keep the guard until the process is about to exit. When the
    /// thread cannot be started, lines are written directly (as after the guard is dropped)
    /// and the error is returned beside the writer.
    pub fn start() -> (Self, Result<FlushGuard, io::Error>) {
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("contextd-log".into())
            .spawn(move || write_loop(&writer, &mut io::stderr()));
        let guard = match spawned {
            Ok(thread) => Ok(FlushGuard {
                shared: shared.clone(),
                thread: Some(thread),
            }),
            Err(e) => {
                shared.lock().closed = true;
                Err(e)
            }
        };
        (Self { shared }, guard)
    }
}

fn write_loop(shared: &Shared, out: &mut impl Write) {
    let mut spare = Vec::new();
    loop {
        // Let lines gather for up to FLUSH_INTERVAL, unless the buffer fills or we close.
        let mut state = shared.lock();
        if !state.closed && state.buffer.len() < FLUSH_BYTES {
            state = shared
                .wake
                .wait_timeout(state, FLUSH_INTERVAL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let closed = state.closed;
        std::mem::swap(&mut state.buffer, &mut spare);
        drop(state);
        shared.drained.notify_all();
        if !spare.is_empty() {
            // Nowhere to report a failed write to stderr; the lines are dropped.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if closed {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line being written.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        if state.closed {
            drop(state);
            return io::stderr().write(bytes);
        }
        while state.buffer.len() >= MAX_BUFFER_BYTES && !state.closed {
            self.shared.wake.notify_one();
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.buffer.extend_from_slice(bytes);
        if state.buffer.len() >= FLUSH_BYTES {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records what the writer thread wrote, and in how many writes.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().unwrap();
            inner.0.extend_from_slice(bytes);
            inner.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_in_batches() {
        let shared = Arc::new(Shared::default());
        let recorder = Recorder::default();
        let thread = {
            let shared = shared.clone();
            let mut out = recorder.clone();
            std::thread::spawn(move || write_loop(&shared, &mut out))
        };
        let guard = FlushGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        let make = BufferedStderr { shared };
        let mut expected = Vec::new();
        for i in 0..10_000 {
            let line = format!("line {i}\n");
            make.make_writer().write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        drop(guard);
        let (written, writes) = recorder.0.lock().unwrap().clone();
        assert_eq!(written, expected, "every line, in order, once");
        assert!(writes < 10_000, "{writes} writes for 10,000 lines");
    }
}
