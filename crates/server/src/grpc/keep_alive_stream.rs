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
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Stream, StreamExt};
use proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse, ResponseHeader};
use tonic::Status;

/// Keep-alives of one stream renewed at the same time, at most. Bounds what a client that
/// floods the stream (or stops reading its answers) holds on this member.
const WINDOW: usize = 256;

/// Renewals of one request, at most, before a keep-alive whose answer would come too late
/// to promise a whole second is answered TTL 0.
const LATE_RENEWAL_TRIES: u32 = 3;

/// A renewal done: what its answer is made of once it is its turn to leave.
#[derive(Debug)]
pub(super) struct Renewed {
    pub header: Option<ResponseHeader>,
    /// The granted TTL; zero for an unknown or expired lease.
    pub granted: Duration,
    /// On the member's lease clock, when the promise starts to count: every leader's
    /// deadline for the lease is at least this plus `granted` (the leader's own renewal, or
    /// when this member took the keep-alive into the log).
    pub since: Duration,
}

/// One renewal: done, or the error that ends the stream.
pub(super) type Renewal = Pin<Box<dyn Future<Output = Result<Renewed, Status>> + Send>>;

/// A renewal in flight: the lease ID, how many times it was started, and its outcome.
type InFlight = Pin<Box<dyn Future<Output = (i64, u32, Result<Renewed, Status>)> + Send>>;

/// One keep-alive stream's answers, as a stream for tonic to send: `incoming` is the
/// client's requests, `renew` starts the renewal of one lease ID, `now` reads the member's
/// lease clock.
///
/// An answer's TTL is worked out when the answer leaves, not when its renewal is done: an
/// answer that waited behind an earlier, slower one promises the granted TTL less that
/// wait (`node::promised_ttl`, as for any late answer; docs/lease.md, "What an answer
/// promises"). One too late to promise a whole second renews again, in its place.
pub(super) struct KeepAliveStream<In, F, N> {
    incoming: In,
    renew: F,
    now: N,
    /// Renewals in request order. Each is polled as soon as it is pushed (so it joins its
    /// batch now, not when it reaches the front) and then only when woken; outcomes leave
    /// in request order.
    in_flight: FuturesOrdered<InFlight>,
    /// The client closed its side, or sent what could not be decoded (`failed`).
    input_done: bool,
    /// The decoding error, given once the answers before it are out.
    failed: Option<Status>,
    /// An error was given: nothing follows it.
    ended: bool,
}

impl<In, F, N> KeepAliveStream<In, F, N>
where
    In: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
    F: FnMut(i64) -> Renewal,
    N: Fn() -> Duration,
{
    pub(super) fn new(incoming: In, renew: F, now: N) -> KeepAliveStream<In, F, N> {
        KeepAliveStream {
            incoming,
            renew,
            now,
            in_flight: FuturesOrdered::new(),
            input_done: false,
            failed: None,
            ended: false,
        }
    }

    fn start(&mut self, id: i64, tries: u32) -> InFlight {
        Box::pin((self.renew)(id).map(move |r| (id, tries, r)))
    }

    /// Starts a renewal for every request received so far, up to [`WINDOW`] in flight.
    fn read_requests(&mut self, cx: &mut TaskContext<'_>) {
        while !self.input_done && self.in_flight.len() < WINDOW {
            match Pin::new(&mut self.incoming).poll_next(cx) {
                Poll::Ready(Some(Ok(req))) => {
                    let renewal = self.start(req.id, 1);
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

    /// The answer to a renewal of `id` leaving now: `None` if it is too late to promise a
    /// whole second and the lease was live (renew it again).
    fn answer(&self, id: i64, done: Renewed, last_try: bool) -> Option<LeaseKeepAliveResponse> {
        let ttl = if done.granted.is_zero() {
            0
        } else {
            let lag = (self.now)().saturating_sub(done.since);
            let promised = node::promised_ttl(done.granted, node::EXPIRY_GRACE, lag).as_secs();
            if promised == 0 && !last_try {
                return None;
            }
            promised as i64
        };
        Some(LeaseKeepAliveResponse {
            header: done.header,
            id,
            ttl,
        })
    }
}

impl<In, F, N> Stream for KeepAliveStream<In, F, N>
where
    In: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
    F: FnMut(i64) -> Renewal + Unpin,
    N: Fn() -> Duration + Unpin,
{
    type Item = Result<LeaseKeepAliveResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        this.read_requests(cx);
        while !this.in_flight.is_empty() {
            let Poll::Ready(Some((id, tries, outcome))) = this.in_flight.poll_next_unpin(cx) else {
                return Poll::Pending;
            };
            match outcome {
                Ok(done) => match this.answer(id, done, tries >= LATE_RENEWAL_TRIES) {
                    Some(answer) => return Poll::Ready(Some(Ok(answer))),
                    None => {
                        // Too late to promise anything: renew again, still first in line.
                        let again = this.start(id, tries + 1);
                        this.in_flight.push_front(again);
                    }
                },
                Err(status) => {
                    this.ended = true;
                    this.in_flight = FuturesOrdered::new();
                    return Poll::Ready(Some(Err(status)));
                }
            }
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
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::sync::{mpsc, oneshot};

    use super::*;

    type Outcome = Result<Renewed, Status>;
    /// The renewals begun so far (recorded when first polled, not when created), each
    /// finished when the test sends its outcome.
    type Started = Arc<Mutex<Vec<(i64, Option<oneshot::Sender<Outcome>>)>>>;
    type Answer = Result<LeaseKeepAliveResponse, Status>;

    /// The test's lease clock, in milliseconds.
    #[derive(Clone, Default)]
    struct Clock(Arc<AtomicU64>);

    impl Clock {
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.load(Ordering::SeqCst))
        }
        fn advance(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    /// A renewal granted `secs` whose promise starts now.
    fn renewed(clock: &Clock, secs: u64) -> Outcome {
        Ok(Renewed {
            header: None,
            granted: Duration::from_secs(secs),
            since: clock.now(),
        })
    }

    struct UnderTest {
        tx: mpsc::UnboundedSender<Result<LeaseKeepAliveRequest, Status>>,
        started: Started,
        clock: Clock,
        stream: Pin<Box<dyn Stream<Item = Answer>>>,
    }

    /// A stream whose requests the test sends, and whose renewals it finishes by hand.
    fn stream_under_test() -> UnderTest {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let incoming = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let started: Started = Arc::default();
        let renewals = started.clone();
        let renew = move |id| -> Renewal {
            let renewals = renewals.clone();
            Box::pin(async move {
                let (done, outcome) = oneshot::channel();
                renewals.lock().unwrap().push((id, Some(done)));
                outcome
                    .await
                    .unwrap_or_else(|_| Err(Status::cancelled("x")))
            })
        };
        let clock = Clock::default();
        let reading = clock.clone();
        let stream = KeepAliveStream::new(incoming, renew, move || reading.now());
        UnderTest {
            tx,
            started,
            clock,
            stream: Box::pin(stream),
        }
    }

    impl UnderTest {
        fn send(&self, id: i64) {
            self.tx.send(Ok(LeaseKeepAliveRequest { id })).unwrap();
        }

        /// Finishes the renewal begun `n`-th.
        fn finish(&self, n: usize, outcome: Outcome) {
            let done = self.started.lock().unwrap()[n].1.take();
            done.expect("finished twice").send(outcome).unwrap();
        }

        fn started(&self) -> Vec<i64> {
            self.started
                .lock()
                .unwrap()
                .iter()
                .map(|(id, _)| *id)
                .collect()
        }

        /// The next item if one is ready now; `None` while the stream waits.
        fn poll_now(&mut self) -> Option<Option<Answer>> {
            self.stream.next().now_or_never()
        }

        /// The next answer, which must be ready: (id, TTL).
        fn answer(&mut self) -> (i64, i64) {
            match self.poll_now() {
                Some(Some(Ok(r))) => (r.id, r.ttl),
                other => panic!("expected an answer, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_received_request_starts_before_the_first_answer_and_answers_keep_their_order() {
        let mut t = stream_under_test();
        for id in 1..=5 {
            t.send(id);
        }
        assert!(t.poll_now().is_none(), "nothing is renewed yet");
        assert_eq!(t.started(), vec![1, 2, 3, 4, 5], "all five renew at once");
        for n in (1..5).rev() {
            t.finish(n, renewed(&t.clock, 60));
            assert!(
                t.poll_now().is_none(),
                "the first request is not answered yet"
            );
        }
        t.finish(0, renewed(&t.clock, 60));
        let order: Vec<(i64, i64)> = (0..5).map(|_| t.answer()).collect();
        assert_eq!(order, (1..=5).map(|id| (id, 60)).collect::<Vec<_>>());
        assert!(t.poll_now().is_none(), "the client's side is still open");
    }

    #[test]
    fn the_stream_ends_when_the_client_closes_and_the_answers_are_out() {
        let mut t = stream_under_test();
        t.send(1);
        assert!(t.poll_now().is_none());
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut t.tx, closed));
        assert!(t.poll_now().is_none(), "the answer to 1 is still due");
        t.finish(0, renewed(&t.clock, 60));
        assert_eq!(t.answer(), (1, 60));
        assert!(
            matches!(t.poll_now(), Some(None)),
            "closed and answered: ends"
        );
    }

    #[test]
    fn an_unknown_lease_answers_ttl_zero_and_the_stream_goes_on() {
        let mut t = stream_under_test();
        t.send(7);
        t.send(8);
        assert!(t.poll_now().is_none());
        t.finish(0, renewed(&t.clock, 0));
        t.finish(1, renewed(&t.clock, 30));
        assert_eq!(t.answer(), (7, 0));
        assert_eq!(t.answer(), (8, 30));
    }

    #[test]
    fn an_answer_held_behind_a_slower_one_promises_the_ttl_less_its_wait() {
        let mut t = stream_under_test();
        t.send(1);
        t.send(2);
        assert!(t.poll_now().is_none());
        t.finish(1, renewed(&t.clock, 60));
        t.clock.advance(10_600);
        assert!(t.poll_now().is_none());
        t.finish(0, renewed(&t.clock, 60));
        assert_eq!(t.answer(), (1, 60));
        // Renewed 10.6 s before it leaves: 60 + 0.5 (the leader's grace) - 10.6 = 49.9.
        assert_eq!(t.answer(), (2, 49));
    }

    #[test]
    fn an_answer_too_late_to_promise_a_second_renews_again_in_its_place() {
        let mut t = stream_under_test();
        t.send(1);
        t.send(2);
        t.send(3);
        assert!(t.poll_now().is_none());
        t.finish(1, renewed(&t.clock, 2));
        t.finish(2, renewed(&t.clock, 60));
        t.clock.advance(2_600);
        t.finish(0, renewed(&t.clock, 60));
        assert_eq!(t.answer(), (1, 60));
        // Lease 2 (TTL 2 s) was renewed 2.6 s ago: nothing left to promise. It renews again
        // before anything after it is answered.
        assert!(t.poll_now().is_none());
        assert_eq!(t.started(), vec![1, 2, 3, 2]);
        t.finish(3, renewed(&t.clock, 2));
        assert_eq!(t.answer(), (2, 2));
        assert_eq!(t.answer(), (3, 57));
    }

    #[test]
    fn a_keep_alive_still_too_late_after_its_last_try_answers_ttl_zero() {
        let mut t = stream_under_test();
        t.send(1);
        assert!(t.poll_now().is_none());
        for n in 0..LATE_RENEWAL_TRIES as usize {
            let late = renewed(&t.clock, 2);
            t.clock.advance(3_000);
            t.finish(n, late);
            if n + 1 < LATE_RENEWAL_TRIES as usize {
                assert!(t.poll_now().is_none(), "try {n} renews again");
            }
        }
        assert_eq!(t.answer(), (1, 0));
        assert_eq!(t.started().len(), LATE_RENEWAL_TRIES as usize);
    }

    #[test]
    fn a_failed_renewal_ends_the_stream_after_the_answers_before_it() {
        let mut t = stream_under_test();
        for id in 1..=3 {
            t.send(id);
        }
        assert!(t.poll_now().is_none());
        t.finish(2, renewed(&t.clock, 60));
        t.finish(1, Err(Status::unavailable("etcdserver: no leader")));
        t.finish(0, renewed(&t.clock, 60));
        assert_eq!(t.answer(), (1, 60));
        match t.poll_now() {
            Some(Some(Err(e))) => assert_eq!(e.message(), "etcdserver: no leader"),
            other => panic!("expected the error, got {other:?}"),
        }
        t.send(4);
        assert!(
            matches!(t.poll_now(), Some(None)),
            "nothing after the error"
        );
        assert_eq!(t.started(), vec![1, 2, 3], "nothing read after the error");
    }

    #[test]
    fn an_undecodable_request_ends_the_stream_after_the_answers_to_those_before_it() {
        let mut t = stream_under_test();
        t.send(1);
        t.tx.send(Err(Status::internal("bad frame"))).unwrap();
        t.send(2);
        assert!(t.poll_now().is_none());
        assert_eq!(t.started(), vec![1], "nothing is read past the bad request");
        t.finish(0, renewed(&t.clock, 60));
        assert_eq!(t.answer(), (1, 60));
        match t.poll_now() {
            Some(Some(Err(e))) => assert_eq!(e.message(), "bad frame"),
            other => panic!("expected the decoding error, got {other:?}"),
        }
        assert!(matches!(t.poll_now(), Some(None)));
    }

    #[test]
    fn at_most_a_window_of_renewals_is_in_flight() {
        let mut t = stream_under_test();
        for id in 0..(WINDOW + 10) as i64 {
            t.send(id);
        }
        assert!(t.poll_now().is_none());
        assert_eq!(t.started().len(), WINDOW);
        t.finish(0, renewed(&t.clock, 60));
        assert_eq!(t.answer(), (0, 60));
        assert!(t.poll_now().is_none());
        assert_eq!(
            t.started().len(),
            WINDOW + 1,
            "one answer out, one more request in"
        );
    }
}
