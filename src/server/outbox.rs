//! The outgoing side of a server stream: a bounded buffer between the producer (a turn) and
//! the client's reads, so that no client can hold a turn, and with it the session's lock, by
//! not reading.
//!
//! Bounded twice: in events (the channel) and in bytes (a semaphore of
//! `limits.stream_buffer_bytes`, each event holding its encoded size until the response
//! stream hands it on). A send waits for room at most `limits.stream_stall_timeout_ms`; past
//! that the stream is *stalled*: the send fails (the producer treats it as a client that left,
//! so the turn stops and stores nothing), and the response stream, once the client reads what
//! was buffered, ends with DEADLINE_EXCEEDED saying so.
//!
//! A reader that falls far behind gets the reply text queued for it in one message: when the
//! response stream hands on a text delta with at least [`COALESCE_BEHIND`] events waiting
//! after it, it joins the text deltas among them that follow at once (see [`Coalesce`]). A
//! reader closer behind, or one that keeps up, gets every event as it was sent; either way the
//! concatenated text is the same.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tonic::Status;

use crate::config::Limits;
use crate::engine::SinkClosed;

/// Events buffered per stream before the producer waits for the client.
const STREAM_EVENTS: usize = 32;

/// Events that must be waiting behind a text delta before the deltas among them are joined
/// into it: half the channel, so a reader only a few events behind (a busy machine, a slow
/// first read) sees every delta as sent, and one that has filled its buffer catches up in one
/// message instead of many.
pub const COALESCE_BEHIND: usize = STREAM_EVENTS / 2;

/// An item on its way to the client with the bytes it holds. Boxed: tokio allocates a
/// channel's first block of 32 slots when the channel is made, and an unboxed
/// `Result<_, Status>` (a `Status` alone is over 170 bytes) made that block several KiB for
/// every open stream, idle or not.
type Item<T> = (Box<Result<T, Status>>, Option<OwnedSemaphorePermit>);

/// The producer's end. Cheap to clone.
pub struct Outbox<T> {
    tx: mpsc::Sender<Item<T>>,
    bytes: Arc<Semaphore>,
    budget: usize,
    stall: Duration,
    stalled: Arc<OnceLock<Status>>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            bytes: self.bytes.clone(),
            budget: self.budget,
            stall: self.stall,
            stalled: self.stalled.clone(),
        }
    }
}

/// An event that may take in the event queued after it.
pub trait Coalesce {
    /// Appends `next` to `self` when both are reply text of one turn, taking `next`'s text and
    /// returning true; leaves both as they are and returns false otherwise.
    fn absorb(&mut self, next: &mut Self) -> bool;
}

/// The response stream: the buffered items, then the stall status if the stream stalled.
pub struct OutboxStream<T> {
    rx: mpsc::Receiver<Item<T>>,
    /// An item taken from the channel while coalescing that could not be joined: the next one
    /// handed on.
    next: Option<Item<T>>,
    stalled: Arc<OnceLock<Status>>,
    done: bool,
}

/// A bounded outbox and its response stream, with `limits`' bounds.
pub fn outbox<T>(limits: &Limits) -> (Outbox<T>, OutboxStream<T>) {
    let (tx, rx) = mpsc::channel(STREAM_EVENTS);
    let budget = limits.stream_buffer_bytes.max(1);
    let stalled = Arc::new(OnceLock::new());
    (
        Outbox {
            tx,
            bytes: Arc::new(Semaphore::new(budget)),
            budget,
            stall: Duration::from_millis(limits.stream_stall_timeout_ms.max(1)),
            stalled: stalled.clone(),
        },
        OutboxStream {
            rx,
            next: None,
            stalled,
            done: false,
        },
    )
}

impl<T> Outbox<T> {
    /// Sends `item` of `size` encoded bytes; fails when the client left or stopped reading for
    /// longer than the stall timeout (then the stream ends with DEADLINE_EXCEEDED).
    pub async fn send(&self, item: Result<T, Status>, size: usize) -> Result<(), SinkClosed> {
        if self.stalled.get().is_some() {
            return Err(SinkClosed);
        }
        // An event larger than the whole budget waits for an empty buffer.
        let wanted = u32::try_from(size.clamp(1, self.budget)).unwrap_or(u32::MAX);
        let room = async {
            let permit = self.bytes.clone().acquire_many_owned(wanted).await.ok();
            let slot = self.tx.reserve().await.map_err(|_| SinkClosed)?;
            Ok::<_, SinkClosed>((permit, slot))
        };
        match tokio::time::timeout(self.stall, room).await {
            Ok(Ok((permit, slot))) => {
                slot.send((Box::new(item), permit));
                Ok(())
            }
            Ok(Err(SinkClosed)) => Err(SinkClosed),
            Err(_) => {
                let seconds = self.stall.as_secs_f64();
                let _ = self.stalled.set(Status::deadline_exceeded(format!(
                    "the client did not read the stream for {seconds} s (limits.stream_stall_timeout_ms); the turn was stopped and nothing of it was stored"
                )));
                tracing::warn!(
                    stall_ms = self.stall.as_millis() as u64,
                    "stream stalled: the client stopped reading; ending the turn"
                );
                Err(SinkClosed)
            }
        }
    }

    /// Resolves when the client has left (the response stream was dropped).
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl<T: Coalesce> OutboxStream<T> {
    /// Joins the items already waiting behind `first` into it while it takes them in; the
    /// first one it does not take waits in `self.next`.
    fn coalesce(&mut self, first: &mut T) {
        while let Ok(mut item) = self.rx.try_recv() {
            // The joined item's permit is released here, with the bytes it held.
            let joined = match item.0.as_mut() {
                Ok(event) => first.absorb(event),
                Err(_) => false,
            };
            if !joined {
                self.next = Some(item);
                return;
            }
        }
    }
}

impl<T: Coalesce> Stream for OutboxStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let waiting = match self.next.take() {
            Some(item) => Poll::Ready(Some(item)),
            None => self.rx.poll_recv(cx),
        };
        match waiting {
            // The permit is released here: the item has left the buffer for the encoder.
            Poll::Ready(Some((item, _permit))) => Poll::Ready(Some((*item).map(|mut event| {
                if self.rx.len() >= COALESCE_BEHIND {
                    self.coalesce(&mut event);
                }
                event
            }))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.stalled.get().cloned().map(Err))
            }
            Poll::Pending => {
                // A stalled stream ends now: nothing more comes after what is buffered.
                let stalled = self.stalled.get().cloned();
                match stalled {
                    Some(status) if self.rx.is_empty() => {
                        self.done = true;
                        Poll::Ready(Some(Err(status)))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    /// Numbers are never joined.
    impl Coalesce for u32 {
        fn absorb(&mut self, _next: &mut Self) -> bool {
            false
        }
    }

    /// Text joins text; a mark joins nothing.
    #[derive(Debug, PartialEq)]
    enum Event {
        Text(String),
        Mark(u32),
    }

    impl Coalesce for Event {
        fn absorb(&mut self, next: &mut Self) -> bool {
            match (self, next) {
                (Event::Text(text), Event::Text(more)) => {
                    text.push_str(&std::mem::take(more));
                    true
                }
                _ => false,
            }
        }
    }

    fn text(s: &str) -> Event {
        Event::Text(s.into())
    }

    #[tokio::test]
    async fn text_waiting_for_a_reader_far_behind_comes_in_one_event_up_to_the_next_other_one() {
        let (outbox, mut stream) = outbox::<Event>(&limits(10_000, 30_000));
        let words: Vec<String> = (0..COALESCE_BEHIND + 2).map(|i| format!("{i} ")).collect();
        for word in &words {
            outbox.send(Ok(text(word)), 10).await.unwrap();
        }
        outbox.send(Ok(Event::Mark(1)), 10).await.unwrap();
        outbox.send(Ok(text("after")), 10).await.unwrap();
        outbox.send(Err(Status::aborted("end")), 0).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), text(&words.concat()));
        assert_eq!(stream.next().await.unwrap().unwrap(), Event::Mark(1));
        assert_eq!(stream.next().await.unwrap().unwrap(), text("after"));
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        drop(outbox);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_reader_a_few_events_behind_gets_every_event_as_sent() {
        let (outbox, stream) = outbox::<Event>(&limits(10_000, 30_000));
        let words: Vec<String> = (0..COALESCE_BEHIND).map(|i| format!("{i} ")).collect();
        for word in &words {
            outbox.send(Ok(text(word)), 10).await.unwrap();
        }
        drop(outbox);
        let got: Vec<Event> = stream.map(Result::unwrap).collect().await;
        assert_eq!(got, words.iter().map(|w| text(w)).collect::<Vec<_>>());
    }

    #[test]
    fn a_buffered_item_is_two_words_and_a_pointer_whatever_it_carries() {
        // What every open stream's channel block holds 32 of.
        assert!(std::mem::size_of::<Item<[u8; 440]>>() <= 3 * std::mem::size_of::<usize>());
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_every_event_as_sent() {
        let (outbox, mut stream) = outbox::<Event>(&limits(1_000, 30_000));
        for word in ["one ", "two ", "three"] {
            outbox.send(Ok(text(word)), 10).await.unwrap();
            assert_eq!(stream.next().await.unwrap().unwrap(), text(word));
        }
    }

    #[tokio::test]
    async fn joined_text_frees_its_room_in_the_buffer() {
        // Room for exactly the events sent: once the reader has taken the joined text, every
        // permit is back and as many fit again at once.
        let events = COALESCE_BEHIND + 1;
        let (outbox, mut stream) = outbox::<Event>(&limits(events * 10, 30_000));
        for _ in 0..events {
            outbox.send(Ok(text("a")), 10).await.unwrap();
        }
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            text(&"a".repeat(events))
        );
        for _ in 0..events {
            within_a_moment(outbox.send(Ok(text("b")), 10)).await;
        }
    }

    async fn within_a_moment(send: impl Future<Output = Result<(), SinkClosed>>) {
        tokio::time::timeout(Duration::from_secs(5), send)
            .await
            .expect("room in the buffer")
            .unwrap();
    }

    fn limits(bytes: usize, stall_ms: u64) -> Limits {
        Limits {
            stream_buffer_bytes: bytes,
            stream_stall_timeout_ms: stall_ms,
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_stalls_the_stream_after_the_timeout() {
        let (outbox, mut stream) = outbox::<u32>(&limits(100, 30_000));
        // 100 bytes of room: two 50-byte items fit, the third waits for the reader.
        outbox.send(Ok(1), 50).await.unwrap();
        outbox.send(Ok(2), 50).await.unwrap();
        let third = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(Ok(3), 50).await }
        });
        // Paused time: the wait ends exactly at the timeout, not by a race.
        assert!(third.await.unwrap().is_err());
        assert!(
            outbox.send(Ok(4), 1).await.is_err(),
            "a stalled outbox stays stalled"
        );
        drop(outbox);
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert_eq!(stream.next().await.unwrap().unwrap(), 2);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(
            status
                .message()
                .contains("did not read the stream for 30 s"),
            "{status:?}"
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_up_never_stalls() {
        let (outbox, mut stream) = outbox::<u32>(&limits(100, 1_000));
        let producer = tokio::spawn(async move {
            for i in 0..1000 {
                outbox.send(Ok(i), 60).await.unwrap();
            }
        });
        let mut seen = 0;
        while let Some(item) = stream.next().await {
            assert_eq!(item.unwrap(), seen);
            seen += 1;
            // A slow reader, but faster than the timeout.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        producer.await.unwrap();
        assert_eq!(seen, 1000);
    }

    #[tokio::test]
    async fn an_item_larger_than_the_budget_waits_for_an_empty_buffer() {
        let (outbox, mut stream) = outbox::<u32>(&limits(10, 30_000));
        outbox.send(Ok(1), 1_000_000).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        outbox.send(Ok(2), 1_000_000).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 2);
    }
}
