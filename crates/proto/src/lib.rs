//! The wire protocol of raftkv.
//!
//! * [`etcdserverpb`], [`mvccpb`], [`authpb`]: etcd's v3 API, so that `etcdctl` and etcd
//!   client libraries talk to raftkv unchanged. Every service has a generated client
//!   (`kv_client::KvClient`, ...) and server (`kv_server::KvServer` + the `kv_server::Kv`
//!   trait, ...). Server traits come with default methods answering `UNIMPLEMENTED`, so a
//!   server only implements what it supports.
//! * [`raftkvpb`]: raftkv's own messages, chiefly [`raftkvpb::InternalRequest`], the
//!   payload of a Raft log entry that every member applies to its MVCC store.
//!
//! All `bytes` fields are [`bytes::Bytes`]. Build them with `Bytes::from(vec)`,
//! `Bytes::from_static(b"..")` or `Bytes::copy_from_slice(..)`.

#![allow(clippy::all, clippy::pedantic)]
#![allow(missing_docs)]

pub use prost;

pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

pub mod raftkvpb {
    include!(concat!(env!("OUT_DIR"), "/raftkvpb.rs"));
}

/// etcd's server-side Lock service.
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// etcd's server-side Election service.
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

/// The encoded `FileDescriptorSet` of every file above: what the JSON gateway needs to map
/// messages to and from etcd's JSON (field names, types) without a second code generator.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
