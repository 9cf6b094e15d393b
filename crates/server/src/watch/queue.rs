//! A bounded single-producer, single-consumer queue between two tasks (or the node thread
//! and a task), used for a watch stream's two queues: the hub's live batches into the stream
//! task, and the task's response batches out to the gRPC response stream.
//!
//! Why not `tokio::sync::mpsc`: a tokio channel allocates, when it is created, a
//! cache-padded header and a block of 32 slots (about 1.3 KB for each of a stream's two
//! queues), although an idle stream holds nothing in them. This queue is one small
//! allocation (a mutex around a `VecDeque` that allocates on its first item and gives its
//! memory back when it drains after a burst, and one waker per side), which matters when a
//! member serves tens of thousands of streams.
//!
//! Each side has exactly one owner (neither end is `Clone`), so one [`AtomicWaker`] per side
//! is enough: a side registers its waker, then looks at the queue under the mutex; the other
//! side changes the queue under the mutex, then wakes. Either order of the two leaves no
//! wake-up lost.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

/// A queue that drained keeps at most this many slots of the memory it grew to.
const KEEP_SLOTS: usize = 8;

struct State<T> {
    items: VecDeque<T>,
    sender_alive: bool,
    receiver_alive: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// The receiver's task, waiting for an item or for the sender to go.
    receiver: AtomicWaker,
    /// The sender's task, waiting for room or for the receiver to go.
    sender: AtomicWaker,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing under the lock can panic half-way through a change.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The producing end.
pub struct Sender<T>(Arc<Shared<T>>);

/// The consuming end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// [`Receiver::try_recv`] found nothing queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Empty;

/// Why [`Sender::try_send`] did not queue its item (which it hands back).
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// A queue holding at most `capacity` items (at least one).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
        }),
        capacity: capacity.max(1),
        receiver: AtomicWaker::new(),
        sender: AtomicWaker::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the receiver is gone. Never waits.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if let Some(waker) = self.try_send_unwoken(item)? {
            waker.wake();
        }
        Ok(())
    }

    /// [`Sender::try_send`], but the receiver is not woken here: its waker is handed back
    /// when it has to be woken (it waits for this item), for the caller to wake once it is
    /// ready to let the receiver run. A receiver woken for another reason in between finds
    /// the item anyway (it looks at the queue after registering its waker).
    pub fn try_send_unwoken(&self, item: T) -> Result<Option<Waker>, TrySendError<T>> {
        let was_empty = {
            let mut st = self.0.lock();
            if !st.receiver_alive {
                return Err(TrySendError::Closed(item));
            }
            if st.items.len() >= self.0.capacity {
                return Err(TrySendError::Full(item));
            }
            st.items.push_back(item);
            st.items.len() == 1
        };
        // The receiver waits only after it found the queue empty.
        Ok(if was_empty {
            self.0.receiver.take()
        } else {
            None
        })
    }

    fn poll_send(&self, cx: &mut Context<'_>, item: &mut Option<T>) -> Poll<Result<(), T>> {
        self.0.sender.register(cx.waker());
        let taken = item.take().expect("polled after completion");
        match self.try_send(taken) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TrySendError::Closed(back)) => Poll::Ready(Err(back)),
            Err(TrySendError::Full(back)) => {
                *item = Some(back);
                Poll::Pending
            }
        }
    }

    /// Queues `item`, waiting while the queue is full; hands it back if the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let mut item = Some(item);
        poll_fn(|cx| self.poll_send(cx, &mut item)).await
    }

    /// Resolves once the receiver is gone.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            self.0.sender.register(cx.waker());
            if self.0.lock().receiver_alive {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_alive = false;
        self.0.receiver.wake();
    }
}

impl<T> Receiver<T> {
    /// The next item if one is queued. Never waits.
    pub fn try_recv(&mut self) -> Result<T, Empty> {
        self.pop().ok_or(Empty)
    }

    fn pop(&mut self) -> Option<T> {
        let (item, was_full) = {
            let mut st = self.0.lock();
            let was_full = st.items.len() >= self.0.capacity;
            let item = st.items.pop_front();
            if st.items.is_empty() && st.items.capacity() > KEEP_SLOTS {
                // A burst is over: give its memory back rather than hold it while idle.
                st.items = VecDeque::new();
            }
            (item, was_full)
        };
        // The sender waits for room only after it found the queue full.
        if was_full && item.is_some() {
            self.0.sender.wake();
        }
        item
    }

    /// [`Receiver::recv`] as a poll (for the gRPC response body, which is polled).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.receiver.register(cx.waker());
        if let Some(item) = self.pop() {
            return Poll::Ready(Some(item));
        }
        if self.0.lock().sender_alive {
            // An item queued since `pop` looked has woken the waker registered above.
            Poll::Pending
        } else {
            // The sender queued its last item before it went: look once more.
            Poll::Ready(self.pop())
        }
    }

    /// The next item, waiting for one; `None` once the queue is empty and the sender gone.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().items.is_empty()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Items still queued are dropped here, not when the sender goes.
        let items = {
            let mut st = self.0.lock();
            st.receiver_alive = false;
            std::mem::take(&mut st.items)
        };
        drop(items);
        self.0.sender.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls `f` once with a waker that does nothing.
    fn poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        let waker = futures_util::task::noop_waker();
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn items_come_out_in_order_and_a_full_queue_refuses_more() {
        let (tx, mut rx) = bounded(2);
        assert!(rx.is_empty());
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert!(!rx.is_empty());
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(tx.try_send(3), Ok(()));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(Empty));
        assert!(rx.is_empty());
    }

    #[test]
    fn a_zero_capacity_still_holds_one_item() {
        let (tx, mut rx) = bounded(0);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
        assert_eq!(rx.try_recv(), Ok(1));
    }

    #[test]
    fn a_drained_queue_gives_back_the_memory_of_a_burst() {
        let (tx, mut rx) = bounded(128);
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        assert!(tx.0.lock().items.capacity() >= 100);
        while rx.try_recv().is_ok() {}
        assert_eq!(tx.0.lock().items.capacity(), 0);
        // A small queue keeps its few slots.
        tx.try_send(1).unwrap();
        rx.try_recv().unwrap();
        assert!(tx.0.lock().items.capacity() <= KEEP_SLOTS);
    }

    #[test]
    fn a_gone_receiver_closes_the_queue_and_drops_what_it_held() {
        let item = Arc::new(());
        let (tx, rx) = bounded(4);
        tx.try_send(item.clone()).unwrap();
        assert_eq!(Arc::strong_count(&item), 2);
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1);
        assert!(matches!(
            tx.try_send(item.clone()),
            Err(TrySendError::Closed(_))
        ));
        let mut closed = std::pin::pin!(tx.closed());
        assert_eq!(poll_once(closed.as_mut()), Poll::Ready(()));
        let mut send = std::pin::pin!(tx.send(item.clone()));
        assert!(matches!(poll_once(send.as_mut()), Poll::Ready(Err(_))));
    }

    #[test]
    fn a_gone_sender_ends_the_queue_after_its_last_items() {
        let (tx, mut rx) = bounded(4);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        {
            let mut recv = std::pin::pin!(rx.recv());
            assert_eq!(poll_once(recv.as_mut()), Poll::Ready(Some(1)));
        }
        assert_eq!(rx.try_recv(), Ok(2));
        let mut recv = std::pin::pin!(rx.recv());
        assert_eq!(poll_once(recv.as_mut()), Poll::Ready(None));
    }

    #[test]
    fn an_open_queue_with_nothing_in_it_waits() {
        let (tx, mut rx) = bounded::<u8>(1);
        let mut recv = std::pin::pin!(rx.recv());
        assert_eq!(poll_once(recv.as_mut()), Poll::Pending);
        let mut closed = std::pin::pin!(tx.closed());
        assert_eq!(poll_once(closed.as_mut()), Poll::Pending);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receiver_and_a_waiting_sender_are_woken() {
        // Many items through a queue of one: the sender waits for room after every item
        // and the receiver for every item, so a lost wake-up hangs and the deadline fails.
        const N: u32 = 20_000;
        let (tx, mut rx) = bounded(1);
        let producer = tokio::spawn(async move {
            for i in 0..N {
                tx.send(i).await.expect("receiver alive");
            }
        });
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(i) = rx.recv().await {
                got.push(i);
            }
            got
        });
        let got = tokio::time::timeout(Duration::from_secs(60), consumer)
            .await
            .expect("no lost wake-up")
            .unwrap();
        producer.await.unwrap();
        assert_eq!(got, (0..N).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sender_waiting_for_room_learns_that_the_receiver_went() {
        let (tx, rx) = bounded(1);
        tx.try_send(1).unwrap();
        let waiting = tokio::spawn(async move { tx.send(2).await });
        // The receiver goes whether or not the sender is already waiting.
        drop(rx);
        let r = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("the sender is woken")
            .unwrap();
        assert_eq!(r, Err(2));
    }
}
