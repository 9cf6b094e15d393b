//! `--feature-gates`: etcd 3.6's switches for its formerly experimental features, in its
//! syntax (`Name=true,Other=false`), with its error wording.
//!
//! etcd 3.6 moved its boolean `--experimental-*` flags behind gates: each gate below has the
//! experimental flag 3.4/3.5 spell it with ([`Gate::experimental_flag`]), and both spellings
//! are accepted. What each gate does here:
//!
//! - `InitialCorruptCheck`: the start-up hash comparison with the peers
//!   (`crate::corrupt_check`), as `--experimental-initial-corrupt-check`;
//! - `CompactHashCheck`: raftkv's periodic corruption check (`crate::corrupt_monitor`),
//!   every `--compact-hash-check-time` (docs/operations.md says how it differs from
//!   etcd's comparison of hashes at compaction revisions);
//! - `LeaseCheckpoint`, `LeaseCheckpointPersist`: always on here (the leader checkpoints
//!   remaining TTLs through the log; docs/lease.md), so accepted either way with a note;
//! - `StopGRPCServiceOnDefrag`, `TxnModeWriteWithSharedBuffer`, `SetMemberLocalAddr`: about
//!   etcd's bbolt defragmentation, its bbolt read buffers and the source address of its peer
//!   connections; they cannot change data or its safety here, so they are accepted with a
//!   note saying why nothing changes.
//!
//! Errors are etcd's (its `pkg/featuregate` and `embed.SetFeatureGatesFromExperimentalFlags`),
//! so a script that matches on them works unchanged.

use std::collections::BTreeMap;

/// One of etcd 3.6's server feature gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gate {
    StopGrpcServiceOnDefrag,
    TxnModeWriteWithSharedBuffer,
    InitialCorruptCheck,
    CompactHashCheck,
    LeaseCheckpoint,
    LeaseCheckpointPersist,
    SetMemberLocalAddr,
}

/// A gate's maturity, which `AllAlpha` / `AllBeta` select by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Alpha,
    Beta,
}

impl Gate {
    /// Every gate, in a fixed order (the order conflicts are reported in).
    pub const ALL: [Gate; 7] = [
        Gate::StopGrpcServiceOnDefrag,
        Gate::InitialCorruptCheck,
        Gate::CompactHashCheck,
        Gate::TxnModeWriteWithSharedBuffer,
        Gate::LeaseCheckpoint,
        Gate::LeaseCheckpointPersist,
        Gate::SetMemberLocalAddr,
    ];

    /// The gate's name in `--feature-gates`.
    pub fn name(self) -> &'static str {
        match self {
            Gate::StopGrpcServiceOnDefrag => "StopGRPCServiceOnDefrag",
            Gate::TxnModeWriteWithSharedBuffer => "TxnModeWriteWithSharedBuffer",
            Gate::InitialCorruptCheck => "InitialCorruptCheck",
            Gate::CompactHashCheck => "CompactHashCheck",
            Gate::LeaseCheckpoint => "LeaseCheckpoint",
            Gate::LeaseCheckpointPersist => "LeaseCheckpointPersist",
            Gate::SetMemberLocalAddr => "SetMemberLocalAddr",
        }
    }

    /// etcd 3.6's default.
    pub fn default_value(self) -> bool {
        matches!(self, Gate::TxnModeWriteWithSharedBuffer)
    }

    fn stage(self) -> Stage {
        match self {
            Gate::TxnModeWriteWithSharedBuffer => Stage::Beta,
            _ => Stage::Alpha,
        }
    }

    /// The boolean flag 3.4/3.5 spell this gate with (etcd's `ExperimentalFlagToFeatureMap`).
    pub fn experimental_flag(self) -> Option<&'static str> {
        Some(match self {
            Gate::StopGrpcServiceOnDefrag => "experimental-stop-grpc-service-on-defrag",
            Gate::InitialCorruptCheck => "experimental-initial-corrupt-check",
            Gate::CompactHashCheck => "experimental-compact-hash-check-enabled",
            Gate::TxnModeWriteWithSharedBuffer => "experimental-txn-mode-write-with-shared-buffer",
            Gate::LeaseCheckpoint => "experimental-enable-lease-checkpoint",
            Gate::LeaseCheckpointPersist => "experimental-enable-lease-checkpoint-persist",
            Gate::SetMemberLocalAddr => return None,
        })
    }

    fn by_name(name: &str) -> Option<Gate> {
        Gate::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// The value of `--feature-gates`: the gates it set (`AllAlpha` / `AllBeta` expanded to the
/// gates of that stage it did not name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureGates {
    set: BTreeMap<Gate, bool>,
    /// `AllAlpha` / `AllBeta` as given: etcd counts them among the set gates when it prints
    /// the flag's value.
    all: Vec<(&'static str, bool)>,
}

impl FeatureGates {
    /// Parse `Name=bool,Name=bool` as etcd does; `Err` is etcd's reason, which Go's flag
    /// package prints after `invalid value "..." for flag -feature-gates: `.
    pub fn parse(raw: &str) -> Result<FeatureGates, String> {
        let mut pairs = Vec::new();
        for item in raw.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => return Err(format!("missing bool value for {}", item.trim())),
            };
            let b = go_parse_bool(v).ok_or_else(|| {
                format!(
                    "invalid value of {k}={v}, err: strconv.ParseBool: parsing {v:?}: invalid syntax"
                )
            })?;
            pairs.push((k, b));
        }
        let mut gates = FeatureGates::default();
        let mut all = Vec::new();
        for (k, b) in pairs {
            match (k, Gate::by_name(k)) {
                ("AllAlpha", _) => all.push((Stage::Alpha, "AllAlpha", b)),
                ("AllBeta", _) => all.push((Stage::Beta, "AllBeta", b)),
                (_, Some(g)) => {
                    gates.set.insert(g, b);
                }
                (_, None) => return Err(format!("unrecognized feature gate: {k}")),
            }
        }
        // A gate named explicitly wins over AllAlpha / AllBeta, whatever the order.
        for (stage, name, b) in all {
            for g in Gate::ALL.into_iter().filter(|g| g.stage() == stage) {
                gates.set.entry(g).or_insert(b);
            }
            gates.all.retain(|(n, _)| *n != name);
            gates.all.push((name, b));
        }
        Ok(gates)
    }

    /// Whether the gate is on: as set, else etcd's default.
    pub fn enabled(&self, g: Gate) -> bool {
        self.set.get(&g).copied().unwrap_or(g.default_value())
    }

    /// Whether the gate was named (by `--feature-gates`, AllAlpha/AllBeta, or its flag).
    pub fn is_set(&self, g: Gate) -> bool {
        self.set.contains_key(&g)
    }

    /// Set a gate from its experimental flag (only done when `--feature-gates` left it unset).
    fn set(&mut self, g: Gate, on: bool) {
        self.set.insert(g, on);
    }

    /// The flag's value as etcd prints it: `Name=bool` of every set gate, sorted.
    fn printed(&self) -> String {
        let mut pairs: Vec<String> = self
            .set
            .iter()
            .map(|(g, b)| format!("{}={b}", g.name()))
            .chain(self.all.iter().map(|(n, b)| format!("{n}={b}")))
            .collect();
        pairs.sort();
        pairs.join(",")
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// clap's value parser for `--feature-gates`: etcd's reason is kept in a
/// [`crate::flag_errors::GoFlagValueError`] so the error is worded as etcd words it.
pub fn parse_flag(raw: &str) -> Result<FeatureGates, crate::flag_errors::GoFlagValueError> {
    FeatureGates::parse(raw).map_err(crate::flag_errors::GoFlagValueError)
}

/// The gates in force: `--feature-gates` combined with the experimental flags given
/// (`experimental(flag)` is the value of that boolean flag when it was given), checked as
/// etcd 3.6 checks them.
pub fn resolve(
    gates: Option<&FeatureGates>,
    experimental: impl Fn(&str) -> Option<bool>,
) -> anyhow::Result<FeatureGates> {
    let mut resolved = gates.cloned().unwrap_or_default();
    // etcd tests the printed value with a substring match, so `LeaseCheckpointPersist=...`
    // also counts as setting `LeaseCheckpoint`, and AllAlpha counts as setting every alpha
    // gate; raftkv answers the same command lines the same way.
    let printed = gates.map(FeatureGates::printed).unwrap_or_default();
    for g in Gate::ALL {
        let Some(flag) = g.experimental_flag() else {
            continue;
        };
        let Some(v) = experimental(flag) else {
            continue;
        };
        if printed.contains(g.name()) {
            let on = resolved.enabled(g);
            anyhow::bail!(
                "cannot specify both flags: --{flag}={v} and --feature-gates={name}={on} at the same time, please just use --feature-gates={name}={on}",
                name = g.name()
            );
        }
        resolved.set(g, v);
    }
    if resolved.enabled(Gate::LeaseCheckpointPersist) && !resolved.enabled(Gate::LeaseCheckpoint) {
        anyhow::bail!(
            "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint"
        );
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcd_syntax() {
        let g = FeatureGates::parse("InitialCorruptCheck=true,CompactHashCheck=false").unwrap();
        assert!(g.enabled(Gate::InitialCorruptCheck));
        assert!(!g.enabled(Gate::CompactHashCheck));
        assert!(
            g.enabled(Gate::TxnModeWriteWithSharedBuffer),
            "beta default"
        );
        let g = FeatureGates::parse(" InitialCorruptCheck = T ,").unwrap();
        assert!(g.enabled(Gate::InitialCorruptCheck));
        assert_eq!(FeatureGates::parse("").unwrap(), FeatureGates::default());
    }

    #[test]
    fn all_alpha_yields_to_named_gates() {
        let g = FeatureGates::parse("InitialCorruptCheck=false,AllAlpha=true").unwrap();
        assert!(!g.enabled(Gate::InitialCorruptCheck));
        assert!(g.enabled(Gate::CompactHashCheck));
        let g = FeatureGates::parse("AllBeta=false").unwrap();
        assert!(!g.enabled(Gate::TxnModeWriteWithSharedBuffer));
        assert!(!g.enabled(Gate::CompactHashCheck));
    }

    #[test]
    fn bad_values_get_etcd_reasons() {
        assert_eq!(
            FeatureGates::parse("InitialCorruptCheck=maybe").unwrap_err(),
            r#"invalid value of InitialCorruptCheck=maybe, err: strconv.ParseBool: parsing "maybe": invalid syntax"#
        );
        assert_eq!(
            FeatureGates::parse("NoSuchGate=true").unwrap_err(),
            "unrecognized feature gate: NoSuchGate"
        );
        assert_eq!(
            FeatureGates::parse("InitialCorruptCheck").unwrap_err(),
            "missing bool value for InitialCorruptCheck"
        );
    }

    #[test]
    fn experimental_flags_fill_gates_and_conflict_as_in_etcd() {
        let none = |_: &str| None;
        let ic = |f: &str| (f == "experimental-initial-corrupt-check").then_some(true);
        let r = resolve(None, ic).unwrap();
        assert!(r.enabled(Gate::InitialCorruptCheck));
        assert!(!resolve(None, none)
            .unwrap()
            .enabled(Gate::InitialCorruptCheck));
        let gates = FeatureGates::parse("InitialCorruptCheck=true").unwrap();
        assert_eq!(
            resolve(Some(&gates), ic).unwrap_err().to_string(),
            "cannot specify both flags: --experimental-initial-corrupt-check=true and --feature-gates=InitialCorruptCheck=true at the same time, please just use --feature-gates=InitialCorruptCheck=true"
        );
        // A different gate is no conflict.
        let gates = FeatureGates::parse("CompactHashCheck=true").unwrap();
        let r = resolve(Some(&gates), ic).unwrap();
        assert!(r.enabled(Gate::InitialCorruptCheck) && r.enabled(Gate::CompactHashCheck));
        let persist = FeatureGates::parse("LeaseCheckpointPersist=true").unwrap();
        assert_eq!(
            resolve(Some(&persist), none).unwrap_err().to_string(),
            "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint"
        );
    }
}
