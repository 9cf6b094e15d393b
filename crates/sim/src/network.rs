//! The simulated network: a priority queue of messages in flight, ordered by virtual
//! delivery time, with seeded loss, duplication, delay (which is also how messages get
//! reordered) and partitions.
//!
//! A link is checked both when a message is sent and when it would be delivered: a
//! partition cuts messages already on the wire too, as a real cable pull would.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet};

use node::PeerFrame;
use raft::{Message, MessageBody, NodeId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How the wire behaves. Delays are in virtual time units (see `cluster::UNITS_PER_TICK`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Chance that a message is lost.
    pub drop_prob: f64,
    /// Chance that a message is delivered twice (each copy with its own delay).
    pub dup_prob: f64,
    /// Ordinary delay range, inclusive. `min_delay` ≥ 1 so nothing is delivered "now".
    pub min_delay: u64,
    pub max_delay: u64,
    /// Chance of a long delay up to `long_delay_max`: such messages arrive long after
    /// later ones, which is how stale messages get exercised.
    pub long_delay_prob: f64,
    pub long_delay_max: u64,
}

impl NetConfig {
    /// No loss, no duplicates, short delays (but still some reordering between links).
    pub fn reliable() -> NetConfig {
        NetConfig {
            drop_prob: 0.0,
            dup_prob: 0.0,
            min_delay: 1,
            max_delay: 3,
            long_delay_prob: 0.0,
            long_delay_max: 3,
        }
    }

    /// Roughly the MIT tester's unreliable network: 10% loss, some duplicates, long
    /// delays that reorder messages.
    pub fn unreliable() -> NetConfig {
        NetConfig {
            drop_prob: 0.1,
            dup_prob: 0.05,
            min_delay: 1,
            max_delay: 8,
            long_delay_prob: 0.1,
            long_delay_max: 60,
        }
    }
}

/// What travels between simulated members: the core's messages and the drivers'
/// forwarding frames, on the same links (as on the real transport).
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    Raft(Message),
    Frame {
        from: NodeId,
        to: NodeId,
        frame: PeerFrame,
    },
}

impl Packet {
    pub fn from(&self) -> NodeId {
        match self {
            Packet::Raft(m) => m.from,
            Packet::Frame { from, .. } => *from,
        }
    }

    pub fn to(&self) -> NodeId {
        match self {
            Packet::Raft(m) => m.to,
            Packet::Frame { to, .. } => *to,
        }
    }
}

#[derive(Debug)]
struct InFlight {
    deliver_at: u64,
    seq: u64,
    msg: Packet,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.seq) == (other.deliver_at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

/// What happened to one sent message (for the trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFate {
    Queued { copies: u8, first_at: u64 },
    DroppedByFault,
    DroppedByPartition,
}

/// Counters the message-count tests read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub appends_sent: u64,
    pub append_entries_sent: u64,
    /// Append responses that reject (log mismatch): the backtracking cost.
    pub append_rejections: u64,
}

#[derive(Debug)]
pub struct Network {
    pub config: NetConfig,
    queue: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    /// Members cut off from everyone (the MIT tester's `disconnect`).
    isolated: HashSet<NodeId>,
    /// Individual one-way links that are cut.
    blocked: HashSet<(NodeId, NodeId)>,
    pub stats: NetStats,
}

impl Network {
    pub fn new(config: NetConfig) -> Network {
        Network {
            config,
            queue: BinaryHeap::new(),
            next_seq: 0,
            isolated: HashSet::new(),
            blocked: HashSet::new(),
            stats: NetStats::default(),
        }
    }

    pub fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        !self.isolated.contains(&from)
            && !self.isolated.contains(&to)
            && !self.blocked.contains(&(from, to))
    }

    pub fn is_isolated(&self, node: NodeId) -> bool {
        self.isolated.contains(&node)
    }

    pub fn isolate(&mut self, node: NodeId) {
        self.isolated.insert(node);
    }

    pub fn rejoin(&mut self, node: NodeId) {
        self.isolated.remove(&node);
    }

    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub fn unblock(&mut self, from: NodeId, to: NodeId) {
        self.blocked.remove(&(from, to));
    }

    /// Removes every partition (isolations and cut links). Loss and delay settings stay.
    pub fn heal(&mut self) {
        self.isolated.clear();
        self.blocked.clear();
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Puts `msg` on the wire at time `now`.
    pub fn send(&mut self, msg: Packet, now: u64, rng: &mut ChaCha8Rng) -> SendFate {
        self.stats.sent += 1;
        if let Packet::Raft(m) = &msg {
            if let MessageBody::Append { entries, .. } = &m.body {
                self.stats.appends_sent += 1;
                self.stats.append_entries_sent += entries.len() as u64;
            }
            if let MessageBody::AppendResponse {
                rejected: Some(_), ..
            } = &m.body
            {
                self.stats.append_rejections += 1;
            }
        }
        if !self.link_up(msg.from(), msg.to()) {
            self.stats.dropped += 1;
            return SendFate::DroppedByPartition;
        }
        if self.config.drop_prob > 0.0 && rng.gen_bool(self.config.drop_prob) {
            self.stats.dropped += 1;
            return SendFate::DroppedByFault;
        }
        let copies = if self.config.dup_prob > 0.0 && rng.gen_bool(self.config.dup_prob) {
            2
        } else {
            1
        };
        let mut first_at = u64::MAX;
        for _ in 0..copies {
            let at = now + self.delay(rng);
            first_at = first_at.min(at);
            self.queue.push(Reverse(InFlight {
                deliver_at: at,
                seq: self.next_seq,
                msg: msg.clone(),
            }));
            self.next_seq += 1;
        }
        SendFate::Queued { copies, first_at }
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> u64 {
        let c = &self.config;
        if c.long_delay_prob > 0.0 && rng.gen_bool(c.long_delay_prob) {
            rng.gen_range(c.min_delay.max(1)..=c.long_delay_max.max(c.min_delay.max(1)))
        } else {
            rng.gen_range(c.min_delay.max(1)..=c.max_delay.max(c.min_delay.max(1)))
        }
    }

    /// The next message due at or before `now` whose link is still up; messages whose link
    /// went down while they were on the wire are dropped on the way.
    pub fn pop_due(&mut self, now: u64) -> Option<Packet> {
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.deliver_at > now {
                return None;
            }
            let Reverse(item) = self.queue.pop().expect("peeked");
            if self.link_up(item.msg.from(), item.msg.to()) {
                self.stats.delivered += 1;
                return Some(item.msg);
            }
            self.stats.dropped += 1;
        }
        None
    }

    /// A member crashed: what was on its way to it is lost with its receive buffers.
    pub fn drop_addressed_to(&mut self, node: NodeId) {
        let before = self.queue.len();
        let kept: Vec<_> = self
            .queue
            .drain()
            .filter(|Reverse(m)| m.msg.to() != node)
            .collect();
        self.stats.dropped += (before - kept.len()) as u64;
        self.queue = kept.into_iter().collect();
    }
}

/// A short name for a message body, for traces and counters.
pub fn kind_name(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::PreVote { .. } => "PreVote",
        MessageBody::PreVoteResponse { .. } => "PreVoteResp",
        MessageBody::Vote { .. } => "Vote",
        MessageBody::VoteResponse { .. } => "VoteResp",
        MessageBody::Append { .. } => "Append",
        MessageBody::AppendResponse { .. } => "AppendResp",
        MessageBody::Heartbeat { .. } => "Heartbeat",
        MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
        MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
        MessageBody::TimeoutNow => "TimeoutNow",
        MessageBody::ReadIndex { .. } => "ReadIndex",
        MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn msg(from: NodeId, to: NodeId) -> Packet {
        Packet::Raft(Message {
            from,
            to,
            term: 1,
            body: MessageBody::TimeoutNow,
        })
    }

    #[test]
    fn partitions_cut_messages_already_on_the_wire() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut net = Network::new(NetConfig::reliable());
        net.send(msg(1, 2), 0, &mut rng);
        net.block(1, 2);
        assert_eq!(net.pop_due(100), None);
        assert_eq!(net.stats.dropped, 1);
    }

    #[test]
    fn one_way_blocks_leave_the_other_direction_open() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut net = Network::new(NetConfig::reliable());
        net.block(1, 2);
        assert_eq!(
            net.send(msg(1, 2), 0, &mut rng),
            SendFate::DroppedByPartition
        );
        net.send(msg(2, 1), 0, &mut rng);
        assert_eq!(net.pop_due(100), Some(msg(2, 1)));
    }

    #[test]
    fn messages_come_out_in_delivery_time_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut net = Network::new(NetConfig::unreliable());
        for i in 0..200 {
            net.send(msg(1, 2 + i % 3), i, &mut rng);
        }
        let mut last = 0;
        for now in 0..400 {
            while net.pop_due(now).is_some() {
                assert!(now >= last);
                last = now;
            }
        }
        assert_eq!(net.in_flight(), 0);
        assert!(net.stats.dropped > 0, "10% loss should lose some of 200");
    }
}
