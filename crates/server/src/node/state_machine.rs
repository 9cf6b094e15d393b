//! What the node runtime needs from the replicated state machine. The runtime is generic
//! over it so that it can be exercised with a trivial machine in tests, and so that the
//! etcd MVCC store plugs in through one small adapter (`crate::kv::MvccMachine`).

use bytes::Bytes;
use raft::Entry;

pub trait StateMachine: Send + Sync + 'static {
    /// The result of applying one entry, handed to the client call that proposed it.
    type Output: Send + 'static;

    /// Apply one committed entry (in log order, each exactly once per incarnation of the
    /// state). Returns `None` for entries that carry no client request (no-ops).
    fn apply(&mut self, entry: &Entry) -> Option<Self::Output>;

    /// Holds back the wake-ups of the state's readers that applies cause (watch streams fed
    /// by an apply) until the returned guard is dropped. The node thread takes it before a
    /// round's applies and drops it once the round's proposers are answered, so that their
    /// answers are queued on the runtime ahead of the readers' work. `None`: nothing to hold.
    fn hold_reader_wakes(&self) -> Option<Box<dyn Send>> {
        None
    }

    /// A point-in-time copy of the whole state, for a snapshot. Taken on the node thread
    /// under the state lock, so it must be cheap (O(1) or close: shared persistent maps,
    /// not a deep copy); [`StateMachine::encode_to`] serialises it later on the snapshot
    /// writer's thread while applies and reads go on.
    type View: Send + 'static;

    /// The state as it is now, for [`StateMachine::encode_to`]; later applies do not show in it.
    fn view(&self) -> Self::View;

    /// Writes the snapshot image of `view` into `sink`, a part at a time: the bytes
    /// [`StateMachine::snapshot`] returned when the view was taken. The snapshot writer
    /// streams it into the file, so a large store is never held twice in memory.
    fn encode_to(view: &Self::View, sink: &mut dyn std::io::Write) -> std::io::Result<()>;

    /// The snapshot image of `view`, in memory. Panics if `encode_to` fails, which it does
    /// only for a broken state machine (an image of another length than it announced).
    fn encode(view: Self::View) -> Bytes {
        let mut image = Vec::new();
        Self::encode_to(&view, &mut image).expect("the state machine encodes itself consistently");
        Bytes::from(image)
    }

    /// A serialised image of the whole state, for a snapshot (a view encoded at once).
    fn snapshot(&self) -> Bytes {
        Self::encode(self.view())
    }

    /// Replace the whole state with a snapshot image.
    fn restore(&mut self, image: &Bytes) -> anyhow::Result<()>;

    /// Bytes the state occupies (reported as `dbSize`; must be > 0 for etcdctl).
    fn size(&self) -> u64;

    /// Whether the leader may propose membership change `cc` given the state applied so
    /// far (the member list's checks, with etcd's errors). Checked on the leader only, just
    /// before the change is placed: changes go one at a time, so no other change can slip
    /// in between.
    fn check_conf_change(&self, _cc: &raft::ConfChange) -> Result<(), super::ChangeRefusal> {
        Ok(())
    }

    /// The members the applied state records as voters, including those added as voters
    /// that are still learners in the Raft configuration: the node driver promotes those
    /// once they have caught up (`node::Driver::set_promotion_candidates`).
    fn promotion_candidates(&self) -> std::collections::BTreeSet<u64> {
        std::collections::BTreeSet::new()
    }

    /// Member `id`'s peer URLs as the replicated state knows them (for the transport
    /// after a snapshot replaced the log); empty if unknown.
    fn peer_urls(&self, _id: u64) -> Vec<String> {
        Vec::new()
    }

    /// Whether member `id` was removed from the cluster for good, as far as the state
    /// applied so far says.
    fn is_removed(&self, _id: u64) -> bool {
        false
    }

    /// Members whose peer URLs an applied entry changed (`MemberUpdate`) since the last
    /// call, with their new URLs, in apply order: the transport redials them there.
    fn take_peer_url_changes(&mut self) -> Vec<(u64, Vec<String>)> {
        Vec::new()
    }

    /// This member's lease clock, which applies keep: the node thread lends it to the
    /// driver's lease duties (`node::lease_keeper`). `None`: a machine without leases.
    fn lease_clock(&self) -> Option<crate::lease_clock::LeaseClock> {
        None
    }

    /// The log entry of one lease decision of the driver (only asked for when
    /// [`StateMachine::lease_clock`] is some).
    fn lease_entry(_decision: &node::LeaseDecision) -> Bytes {
        Bytes::new()
    }
}
