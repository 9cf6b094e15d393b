//! The sequential specifications shipped with the checker.

pub mod etcd;
pub mod kv;
pub mod register;
