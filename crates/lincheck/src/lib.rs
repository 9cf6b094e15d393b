//! raftkv's history checkers (no network code).
//!
//! - [`check`]: linearizability of a history of invoke/complete operations against a sequential
//!   [`Model`], per key, Wing–Gong search with Lowe's memoisation, within a time budget that
//!   yields [`Verdict::Unknown`] rather than a guess.
//! - [`elle`]: an Elle-style list-append checker (dependency cycles, lost and phantom elements),
//!   linear in the size of the history.
//! - [`report`]: text and SVG witnesses of a violation.
//! - [`parse`], [`cli`]: the public Jepsen etcd and MIT KV log formats, and the command.

pub mod checker;
pub mod cli;
pub mod elle;
pub mod history;
pub mod jsonl;
pub mod model;
pub mod models;
pub mod parse;
pub mod report;
mod search;

pub use checker::{check, CheckOptions, CheckResult, Verdict, Violation, WindowOp, WindowRole};
pub use history::{Completion, History, HistoryError, OpId, Operation, INFINITY};
pub use model::{Model, NondetModel, Powerset};
