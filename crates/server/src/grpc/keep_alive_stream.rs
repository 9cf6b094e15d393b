//! The response side of one `LeaseKeepAlive` stream: the keep-alives a client sends without
//! waiting for answers are renewed together, and answered in the order they were sent.
//!
//! Why: etcd's Go client sends every lease's keep-alive on one stream per client, each
//! without waiting for the answer to the one before. Renewed one at a time, each keep-alive
//! of such a stream waited for its own commit round trip before the next was even read, so a
//! stream could renew only a few hundred leases per second, and a client holding thousands of
//! leases fell behind until leases expired. Now every request already received joins the
//! member's next batched entry (`keep_alive_batch`) at once, up to [`WINDOW`] in flight.
//!
//! What stays as it was: answers come in request order (as etcd's serial loop gives them);
//! an unknown or expired lease answers TTL 0; any other failure ends the stream with its
//! error after the answers to the requests before it, and a request the transport could not
//! decode ends it the same way. A client that stops reading stops the stream: the transport
//! no longer polls it, so nothing more is read, and at most [`WINDOW`] renewals are held.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use tonic::Status;

/// Keep-alives of one stream renewed at the same time, at most. Bounds what a client that
/// floods the stream (or stops reading its answers) holds on this member.
pub(super) const WINDOW: usize = 256;

/// One renewal: the answer, or the error that ends the stream.
pub(super) type Renewal =
    Pin<Box<dyn Future<Output = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// One keep-alive stream's answers, as a stream for tonic to send: `incoming` is the
/// client's requests, `renew` starts the renewal of one lease ID.
pub(super) struct KeepAliveStream<In, F> {
    incoming: In,
    renew: F,
    /// Renewals in request order. Each is polled as soon as it is pushed (so it joins its
    /// batch now, not when it reaches the front) and then only when woken; answers leave
    /// in request order.
    in_flight: FuturesOrdered<Renewal>,
    /// The client closed its side, or sent what could not be decoded (`failed`).
    input_done: bool,
    /// The decoding error, given once the answers before it are out.
    failed: Option<Status>,
    /// An error was given: nothing follows it.
    ended: bool,
}

impl<In, F> KeepAliveStream<In, F>
where
    In: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
    F: FnMut(i64) -> Renewal,
{
    pub(super) fn new(incoming: In, renew: F) -> KeepAliveStream<In, F> {
        KeepAliveStream {
            incoming,
            renew,
            in_flight: FuturesOrdered::new(),
            input_done: false,
            failed: None,
            ended: false,
        }
    }

    /// Starts a renewal for every request received so far, up to [`WINDOW`] in flight.
    fn read_requests(&mut self, cx: &mut TaskContext<'_>) {
        while !self.input_done && self.in_flight.len() < WINDOW {
            match Pin::new(&mut self.incoming).poll_next(cx) {
                Poll::Ready(Some(Ok(req))) => {
                    let renewal = (self.renew)(req.id);
                    self.in_flight.push_back(renewal);
                }
                Poll::Ready(Some(Err(status))) => {
                    self.input_done = true;
                    self.failed = Some(status);
                }
                Poll::Ready(None) => self.input_done = true,
                Poll::Pending => break,
            }
        }
    }
}

impl<In, F> Stream for KeepAliveStream<In, F>
where
    In: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
    F: FnMut(i64) -> Renewal + Unpin,
{
    type Item = Result<LeaseKeepAliveResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        this.read_requests(cx);
        if !this.in_flight.is_empty() {
            let Poll::Ready(Some(answer)) = this.in_flight.poll_next_unpin(cx) else {
                return Poll::Pending;
            };
            if answer.is_err() {
                this.ended = true;
                this.in_flight = FuturesOrdered::new();
            }
            return Poll::Ready(Some(answer));
        }
        if let Some(status) = this.failed.take() {
            this.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        if this.input_done {
            this.ended = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::FutureExt;
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    type Answer = Result<LeaseKeepAliveResponse, Status>;
    /// The renewals started so far, each finished when the test sends its answer.
    type Started = Arc<Mutex<Vec<(i64, Option<oneshot::Sender<Answer>>)>>>;

    fn ok(id: i64) -> Answer {
        Ok(LeaseKeepAliveResponse {
            header: None,
            id,
            ttl: 60,
        })
    }

    /// A stream whose requests the test sends, and whose renewals it finishes by hand.
    fn stream_under_test() -> (
        mpsc::UnboundedSender<Result<LeaseKeepAliveRequest, Status>>,
        Started,
        impl Stream<Item = Answer> + Unpin,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let incoming = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let started: Started = Arc::default();
        let renewals = started.clone();
        let renew = move |id| -> Renewal {
            let (done, answer) = oneshot::channel();
            renewals.lock().unwrap().push((id, Some(done)));
            Box::pin(async move { answer.await.unwrap_or_else(|_| Err(Status::cancelled("x"))) })
        };
        (tx, started, KeepAliveStream::new(incoming, renew))
    }

    fn send(tx: &mpsc::UnboundedSender<Result<LeaseKeepAliveRequest, Status>>, id: i64) {
        tx.send(Ok(LeaseKeepAliveRequest { id })).unwrap();
    }

    /// Finishes the renewal started `n`-th with `answer`.
    fn finish(started: &Started, n: usize, answer: Answer) {
        let done = started.lock().unwrap()[n].1.take();
        done.expect("finished twice").send(answer).unwrap();
    }

    fn started_ids(started: &Started) -> Vec<i64> {
        started.lock().unwrap().iter().map(|(id, _)| *id).collect()
    }

    /// The next item if one is ready now; `None` while the stream waits.
    fn poll_now(s: &mut (impl Stream<Item = Answer> + Unpin)) -> Option<Option<Answer>> {
        s.next().now_or_never()
    }

    fn id_of(item: Option<Option<Answer>>) -> i64 {
        match item {
            Some(Some(Ok(r))) => r.id,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn every_received_request_starts_before_the_first_answer_and_answers_keep_their_order() {
        let (tx, started, mut s) = stream_under_test();
        for id in 1..=5 {
            send(&tx, id);
        }
        assert!(poll_now(&mut s).is_none(), "nothing is renewed yet");
        assert_eq!(
            started_ids(&started),
            vec![1, 2, 3, 4, 5],
            "all five renew at once"
        );
        for n in (1..5).rev() {
            finish(&started, n, ok(n as i64 + 1));
            assert!(
                poll_now(&mut s).is_none(),
                "the first request is not answered yet"
            );
        }
        finish(&started, 0, ok(1));
        let order: Vec<i64> = (0..5).map(|_| id_of(poll_now(&mut s))).collect();
        assert_eq!(order, vec![1, 2, 3, 4, 5]);
        assert!(
            poll_now(&mut s).is_none(),
            "the client's side is still open"
        );
        drop(tx);
        assert!(
            matches!(poll_now(&mut s), Some(None)),
            "closed by the client: ends"
        );
    }

    #[test]
    fn a_failed_renewal_ends_the_stream_after_the_answers_before_it() {
        let (tx, started, mut s) = stream_under_test();
        for id in 1..=3 {
            send(&tx, id);
        }
        assert!(poll_now(&mut s).is_none());
        finish(&started, 2, ok(3));
        finish(
            &started,
            1,
            Err(Status::unavailable("etcdserver: no leader")),
        );
        finish(&started, 0, ok(1));
        assert_eq!(id_of(poll_now(&mut s)), 1);
        match poll_now(&mut s) {
            Some(Some(Err(e))) => assert_eq!(e.message(), "etcdserver: no leader"),
            other => panic!("expected the error, got {other:?}"),
        }
        send(&tx, 4);
        assert!(
            matches!(poll_now(&mut s), Some(None)),
            "nothing after the error"
        );
        assert_eq!(
            started_ids(&started),
            vec![1, 2, 3],
            "nothing read after the error"
        );
    }

    #[test]
    fn an_undecodable_request_ends_the_stream_after_the_answers_to_those_before_it() {
        let (tx, started, mut s) = stream_under_test();
        send(&tx, 1);
        tx.send(Err(Status::internal("bad frame"))).unwrap();
        send(&tx, 2);
        assert!(poll_now(&mut s).is_none());
        assert_eq!(
            started_ids(&started),
            vec![1],
            "nothing is read past the bad request"
        );
        finish(&started, 0, ok(1));
        assert_eq!(id_of(poll_now(&mut s)), 1);
        match poll_now(&mut s) {
            Some(Some(Err(e))) => assert_eq!(e.message(), "bad frame"),
            other => panic!("expected the decoding error, got {other:?}"),
        }
        assert!(matches!(poll_now(&mut s), Some(None)));
    }

    #[test]
    fn at_most_a_window_of_renewals_is_in_flight() {
        let (tx, started, mut s) = stream_under_test();
        for id in 0..(WINDOW + 10) as i64 {
            send(&tx, id);
        }
        assert!(poll_now(&mut s).is_none());
        assert_eq!(started_ids(&started).len(), WINDOW);
        finish(&started, 0, ok(0));
        assert_eq!(id_of(poll_now(&mut s)), 0);
        assert!(poll_now(&mut s).is_none());
        assert_eq!(
            started_ids(&started).len(),
            WINDOW + 1,
            "one answer out, one more request in"
        );
    }
}
