//! A follower's read round is answered by the leader under the context the follower chose.
//! An answer meant for a previous incarnation of the follower (sent while it was down,
//! delivered after its restart) must not release a read of the new one: it names an index
//! from before that read was asked (raftkv-sim seed 63186 served a stale read that way,
//! when every incarnation numbered its read rounds from 0).

use std::time::Duration;

mod common;

use node::{Driver, DriverConfig, Outcome};
use raft::{Message, MessageBody};

const LEADER: u64 = 1;
const ME: u64 = 2;

/// Member 2 of three, following member 1 in term 1, started with `forward_id_base`.
fn follower(forward_id_base: u64) -> Driver {
    let cfg = DriverConfig {
        forward_id_base,
        ..common::config()
    };
    let mut d = Driver::new(
        common::member(ME, vec![1, 2, 3]),
        cfg,
        (0, 0),
        Duration::ZERO,
    );
    d.step(Message {
        from: LEADER,
        to: ME,
        term: 1,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_seq: 0,
        },
    })
    .expect("the leader's heartbeat");
    drain(&mut d);
    d
}

/// Poll until the round is done; the messages sent and the reads released.
fn drain(d: &mut Driver) -> (Vec<Message>, Vec<u64>) {
    let (mut sent, mut released) = (Vec::new(), Vec::new());
    while let Some(fx) = d.poll() {
        sent.extend(fx.messages.iter().cloned());
        sent.extend(fx.persisted_messages.iter().cloned());
        released.extend(
            fx.replies
                .iter()
                .filter(|r| r.outcome == Outcome::ReadReady)
                .map(|r| r.req),
        );
        d.advance();
    }
    (sent, released)
}

/// Ask for a read; the context of the ReadIndex request it sent to the leader.
fn read(d: &mut Driver, req: u64) -> bytes::Bytes {
    d.read(req);
    let (sent, _) = drain(d);
    sent.into_iter()
        .find_map(|m| match m.body {
            MessageBody::ReadIndex { ctx } if m.to == LEADER => Some(ctx),
            _ => None,
        })
        .expect("a ReadIndex request to the leader")
}

fn answer(d: &mut Driver, ctx: bytes::Bytes, index: u64) -> Vec<u64> {
    d.step(Message {
        from: LEADER,
        to: ME,
        term: 1,
        body: MessageBody::ReadIndexResponse {
            ctx,
            index: Some(index),
        },
    })
    .expect("the leader's answer");
    drain(d).1
}

#[test]
fn an_answer_to_a_previous_incarnations_read_does_not_release_a_new_read() {
    let mut before = follower(1 << 40);
    let old_ctx = read(&mut before, 7);
    drop(before); // crashed; the leader answers the read while it is down

    // Restarted: a new incarnation, with its own random base (as the server and the
    // simulator give it).
    let mut after = follower((1 << 40) + (1 << 20));
    let new_ctx = read(&mut after, 8);
    assert_ne!(
        old_ctx, new_ctx,
        "the new incarnation's round has a context of its own"
    );
    assert!(
        answer(&mut after, old_ctx, 0).is_empty(),
        "the previous incarnation's answer released a read"
    );
    assert_eq!(
        answer(&mut after, new_ctx, 0),
        vec![8],
        "the answer to its own round releases it"
    );
}
