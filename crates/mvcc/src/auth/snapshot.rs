//! The auth store's part of a store snapshot, as one self-contained section (the store's
//! snapshot writes it after the keys; a snapshot written before auth existed has no such
//! section and restores to an empty, disabled auth store).
//!
//! ```text
//! enabled u8, revision u64,
//! users u32, then per user in name order: name, password hash (len-prefixed), no_password u8,
//!   roles u32, role names
//! roles u32, then per role in name order: name, perms u32, per perm: type u8, key, range_end
//! ```
//! Strings and byte strings are a u32 length then the bytes; integers big-endian.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proto::authpb::Permission;

use super::{AuthStore, User};

pub fn encode(store: &AuthStore, out: &mut Vec<u8>) {
    out.push(u8::from(store.enabled));
    out.extend_from_slice(&store.revision.to_be_bytes());
    put_u32(out, store.users.len());
    for (name, user) in &store.users {
        put_bytes(out, name.as_bytes());
        put_bytes(out, user.password_hash.as_bytes());
        out.push(u8::from(user.no_password));
        put_u32(out, user.roles.len());
        for role in &user.roles {
            put_bytes(out, role.as_bytes());
        }
    }
    put_u32(out, store.roles.len());
    for (name, perms) in &store.roles {
        put_bytes(out, name.as_bytes());
        put_u32(out, perms.len());
        for p in perms {
            out.push(u8::try_from(p.perm_type).unwrap_or(0));
            put_bytes(out, &p.key);
            put_bytes(out, &p.range_end);
        }
    }
}

/// Reads a section written by [`encode`]; `Err` names what is malformed.
pub fn decode(mut bytes: &[u8]) -> Result<AuthStore, &'static str> {
    let r = &mut bytes;
    let enabled = match take_u8(r)? {
        0 => false,
        1 => true,
        _ => return Err("auth enabled flag"),
    };
    let revision = u64::from_be_bytes(take(r, 8)?.try_into().map_err(|_| "revision")?);
    let mut users = BTreeMap::new();
    for _ in 0..take_u32(r)? {
        let name = take_string(r)?;
        let password_hash = take_string(r)?;
        let no_password = take_u8(r)? != 0;
        let mut roles = BTreeSet::new();
        for _ in 0..take_u32(r)? {
            roles.insert(take_string(r)?);
        }
        users.insert(
            name,
            User {
                password_hash,
                no_password,
                roles,
            },
        );
    }
    let mut roles = BTreeMap::new();
    for _ in 0..take_u32(r)? {
        let name = take_string(r)?;
        let mut perms = Vec::new();
        for _ in 0..take_u32(r)? {
            let perm_type = i32::from(take_u8(r)?);
            if perm_type > 2 {
                return Err("permission type");
            }
            perms.push(Permission {
                perm_type,
                key: Bytes::copy_from_slice(take_len_prefixed(r)?),
                range_end: Bytes::copy_from_slice(take_len_prefixed(r)?),
            });
        }
        roles.insert(name, perms);
    }
    if !r.is_empty() {
        return Err("trailing bytes in auth section");
    }
    Ok(AuthStore {
        enabled,
        revision,
        users,
        roles,
    })
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if r.len() < n {
        return Err("auth section ends early");
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

fn take_u8(r: &mut &[u8]) -> Result<u8, &'static str> {
    Ok(take(r, 1)?[0])
}

fn take_u32(r: &mut &[u8]) -> Result<u32, &'static str> {
    let b = take(r, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_len_prefixed<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let n = take_u32(r)? as usize;
    take(r, n)
}

fn take_string(r: &mut &[u8]) -> Result<String, &'static str> {
    String::from_utf8(take_len_prefixed(r)?.to_vec()).map_err(|_| "name is not UTF-8")
}
