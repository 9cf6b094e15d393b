//! Progress requests on a stream whose watch starts in the future (the case a client meets when
//! it re-watches from `last + 1` on a member that restarted behind): the answer never reports
//! a revision below the one before the watch's start, so a client's progress never goes back
//! (beyond-etcd.md §3.3, "future start"); it comes as soon as the member gets there, also when
//! the revisions that get it there touch no key the stream watches.

mod common;

use std::time::{Duration, Instant};

use proto::etcdserverpb::WatchCreateRequest;
use raftkv_client::client::{Client, Timeouts};
use raftkv_client::local_cluster::{ClusterSpec, LocalCluster};
use raftkv_client::WatchOptions;

#[test]
fn a_progress_answer_never_reports_less_than_a_future_watch_start() {
    let cluster = LocalCluster::start(ClusterSpec::new(common::raftkv_program(), "progress", 1))
        .expect("cluster starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = Client::new(
            &[cluster.member(0).endpoint()],
            Timeouts {
                dial: Duration::from_secs(2),
                call: Duration::from_secs(10),
            },
        )
        .expect("client");
        let current = client
            .put_retrying("before", "x", Duration::from_secs(20))
            .await
            .expect("first write")
            .header
            .expect("header")
            .revision;
        // The watch starts 3 revisions ahead: its stream may claim progress only from
        // `current + 2` on.
        let start = current + 3;
        let mut stream = client
            .watch(
                WatchCreateRequest {
                    key: b"watched".to_vec().into(),
                    start_revision: start,
                    ..WatchCreateRequest::default()
                },
                WatchOptions::default(),
            )
            .await
            .expect("watch opens");
        let deadline = Instant::now() + Duration::from_secs(20);
        let next = async |stream: &mut raftkv_client::WatchStream| {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, stream.next())
                .await
                .expect("timed out")
                .expect("stream failed")
                .expect("stream ended")
        };
        let created = next(&mut stream).await;
        assert!(created.created, "{created:?}");
        stream.request_progress().await.expect("progress request");
        // A second watch on the same stream: its `created` answer comes after the server
        // handled the progress request, which must not be answered yet.
        stream
            .create(WatchCreateRequest {
                key: b"second".to_vec().into(),
                ..WatchCreateRequest::default()
            })
            .await
            .expect("second create");
        let second = next(&mut stream).await;
        assert!(
            second.created && second.watch_id != -1,
            "the progress request was answered before the member reached {}: {second:?}",
            start - 1
        );
        // Two writes to keys the stream does not watch bring the member to `start - 1`.
        for i in 0..2 {
            client
                .put_str(&format!("other{i}"), "y")
                .await
                .expect("write");
        }
        let answer = next(&mut stream).await;
        assert_eq!(answer.watch_id, -1, "a progress answer: {answer:?}");
        assert!(answer.events.is_empty(), "{answer:?}");
        let revision = answer.header.expect("header").revision;
        assert!(
            revision >= start - 1,
            "progress answered at {revision}, below the watch's start {start} - 1"
        );
        // And on a stream with nothing in the future the answer is immediate and current.
        stream.request_progress().await.expect("progress request");
        let again = next(&mut stream).await;
        assert_eq!(again.watch_id, -1, "{again:?}");
        assert_eq!(again.header.expect("header").revision, start - 1);
    });
}
