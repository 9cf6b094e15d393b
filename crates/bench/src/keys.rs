//! Key and value generation for write workloads.
//!
//! Keys are `key_size` bytes with the key index in big-endian in the last (up to 8) bytes,
//! so every index in the key space maps to a distinct key of exactly the requested size.

use bytes::Bytes;
use rand::{rngs::SmallRng, Rng};

use crate::args::KeyArgs;

/// Chooses the next key for one client.
pub struct KeyPicker {
    key_size: usize,
    key_space: u64,
    sequential: bool,
    fill: bool,
    next: u64,
}

impl KeyPicker {
    /// `client` offsets the sequential walk so that clients do not all write the same key.
    pub fn new(args: &KeyArgs, client: u64) -> Self {
        Self {
            key_size: args.key_size,
            key_space: args.key_space_size,
            sequential: args.sequential_keys,
            fill: args.fill,
            next: client % args.key_space_size,
        }
    }

    /// The key for request `slot` of the run (the run's n-th request has slot n).
    pub fn next_key(&mut self, rng: &mut SmallRng, slot: u64) -> Bytes {
        let index = if self.fill {
            slot % self.key_space
        } else if self.sequential {
            let i = self.next;
            self.next = (self.next + 1) % self.key_space;
            i
        } else {
            rng.gen_range(0..self.key_space)
        };
        encode_key(index, self.key_size)
    }
}

/// The key for `index`, `size` bytes long.
pub fn encode_key(index: u64, size: usize) -> Bytes {
    let mut key = vec![0u8; size];
    let be = index.to_be_bytes();
    let n = size.min(8);
    key[size - n..].copy_from_slice(&be[8 - n..]);
    Bytes::from(key)
}

/// A value of `size` bytes; shared by all requests (cloning `Bytes` copies nothing).
pub fn make_value(size: usize) -> Bytes {
    Bytes::from(vec![b'v'; size])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key_args(size: usize, space: u64, sequential: bool) -> KeyArgs {
        KeyArgs {
            key_size: size,
            val_size: 8,
            key_space_size: space,
            sequential_keys: sequential,
            fill: false,
        }
    }

    #[test]
    fn keys_have_the_requested_size_and_are_distinct_per_index() {
        assert_eq!(encode_key(0, 3).len(), 3);
        assert_eq!(encode_key(258, 16).len(), 16);
        assert_ne!(encode_key(1, 2), encode_key(256, 2));
        assert_eq!(&encode_key(258, 2)[..], &[1, 2]);
    }

    #[test]
    fn sequential_keys_walk_the_space_and_wrap() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut p = KeyPicker::new(&key_args(8, 3, true), 1);
        let got: Vec<Bytes> = (0..4).map(|_| p.next_key(&mut rng, 0)).collect();
        let want: Vec<Bytes> = [1, 2, 0, 1].iter().map(|&i| encode_key(i, 8)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn random_keys_stay_inside_the_key_space() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut p = KeyPicker::new(&key_args(8, 5, false), 0);
        let allowed: Vec<Bytes> = (0..5).map(|i| encode_key(i, 8)).collect();
        for _ in 0..200 {
            assert!(allowed.contains(&p.next_key(&mut rng, 0)));
        }
    }

    #[test]
    fn fill_writes_every_key_once_whatever_the_client() {
        let mut rng = SmallRng::seed_from_u64(3);
        let args = KeyArgs {
            fill: true,
            ..key_args(8, 6, false)
        };
        // Three clients taking the run's slots in an arbitrary interleaving.
        let mut pickers: Vec<KeyPicker> = (0..3).map(|c| KeyPicker::new(&args, c)).collect();
        let mut got: Vec<Bytes> = [(2, 0), (0, 1), (0, 2), (1, 3), (2, 4), (1, 5)]
            .iter()
            .map(|&(client, slot)| pickers[client].next_key(&mut rng, slot))
            .collect();
        got.sort();
        let want: Vec<Bytes> = (0..6).map(|i| encode_key(i, 8)).collect();
        assert_eq!(got, want);
        assert_eq!(pickers[0].next_key(&mut rng, 7), encode_key(1, 8));
    }
}
