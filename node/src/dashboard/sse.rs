//! `/api/events`: the node's events as a Server-Sent Events stream, one `change` message per
//! [`EventRecord`], with a comment every [`KEEPALIVE`] so that proxies keep the connection and a
//! vanished client is noticed.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::status::{EventRecord, StatusSource};

/// How often an idle stream sends a comment.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The response: subscribes before answering, so no event published after the response
/// headers reach the client can be missed.
pub(super) async fn events(source: web::Data<dyn StatusSource>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::HeaderName::from_static("x-accel-buffering"), "no"))
        .streaming(stream(source.subscribe()))
}

/// The message stream of one client. It ends only when the source drops its sender; a client
/// too slow for the broadcast buffer skips the events it lost and goes on.
fn stream(events: Receiver<EventRecord>) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let mut keepalive = interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first message tells the client the stream is open (EventSource fires `open` on the
    // headers already; this also flushes them through buffering proxies).
    let hello = Bytes::from_static(b": ferry events\nretry: 1000\n\n");
    let rest = futures_util::stream::unfold(
        (events, keepalive),
        |(mut events, mut keepalive)| async move {
            let message = next(&mut events, &mut keepalive).await?;
            Some((Ok(message), (events, keepalive)))
        },
    );
    futures_util::stream::once(std::future::ready(Ok(hello))).chain(rest)
}

/// The next message for the client: an event, a note that some were skipped, or a keepalive;
/// `None` once the source has gone.
async fn next(events: &mut Receiver<EventRecord>, keepalive: &mut Interval) -> Option<Bytes> {
    tokio::select! {
        received = events.recv() => match received {
            Ok(event) => Some(message(&event)),
            Err(RecvError::Lagged(n)) => Some(Bytes::from(format!(": skipped {n} events\n\n"))),
            Err(RecvError::Closed) => None,
        },
        _ = keepalive.tick() => Some(Bytes::from_static(b": keepalive\n\n")),
    }
}

/// One `change` message. Compact JSON has no line breaks, so one `data:` line carries it.
fn message(event: &EventRecord) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_else(|e| {
        // Serialising plain strings and integers cannot fail; say so on the stream if it did.
        format!("{{\"error\":{:?}}}", e.to_string())
    });
    Bytes::from(format!("event: change\ndata: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast;

    use super::*;

    fn event(n: u64) -> EventRecord {
        EventRecord {
            unix_ms: n,
            folder: "f".into(),
            target: "t".into(),
            kind: "created".into(),
            path: Some(format!("file{n}")),
            detail: "line\nbreak".into(),
        }
    }

    fn text(item: Option<Result<Bytes, Infallible>>) -> String {
        let Some(Ok(bytes)) = item else {
            panic!("the stream ended")
        };
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn events_become_change_messages_and_lag_skips_ahead() {
        let (tx, rx) = broadcast::channel(2);
        let mut s = Box::pin(stream(rx));
        assert!(text(s.next().await).starts_with(": ferry events\n"));
        tx.send(event(1)).unwrap();
        let json = serde_json::to_string(&event(1)).unwrap();
        assert_eq!(
            text(s.next().await),
            format!("event: change\ndata: {json}\n\n")
        );
        for n in 2..=5 {
            tx.send(event(n)).unwrap();
        }
        assert_eq!(text(s.next().await), ": skipped 2 events\n\n");
        assert!(text(s.next().await).contains("\"unix_ms\":4"));
        assert!(text(s.next().await).contains("\"unix_ms\":5"));
        drop(tx);
        assert!(s.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sends_keepalives() {
        let (_tx, rx) = broadcast::channel::<EventRecord>(2);
        let mut s = Box::pin(stream(rx));
        text(s.next().await);
        let before = Instant::now();
        assert_eq!(text(s.next().await), ": keepalive\n\n");
        assert_eq!(before.elapsed(), KEEPALIVE);
    }
}
