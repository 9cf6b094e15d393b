//! The auth store through `Store::apply`, as the log drives it.

use bytes::Bytes;
use proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use proto::etcdserverpb::{
    request_op, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest, Compare,
    LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proto::raftkvpb::{
    internal_request::Request, AuthenticateRecord, InternalRequest, RequestAuth,
};

use super::{AuthApplied, AuthError, RequestChecker};
use crate::{MvccError, Response, Store};

fn apply_as(
    store: &mut Store,
    who: Option<(&str, u64)>,
    r: Request,
) -> Result<Response, MvccError> {
    store.apply(&InternalRequest {
        auth: who.map(|(u, rev)| RequestAuth {
            username: u.to_string(),
            auth_revision: rev,
        }),
        request: Some(r),
    })
}

fn apply(store: &mut Store, r: Request) -> Result<Response, MvccError> {
    apply_as(store, None, r)
}

fn auth_err(r: Result<Response, MvccError>) -> AuthError {
    match r {
        Err(MvccError::Auth(e)) => e,
        other => panic!("expected an auth error, got {other:?}"),
    }
}

fn user_add(name: &str) -> Request {
    Request::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: format!("hash-of-{name}"),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> Request {
    Request::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn grant_perm(role: &str, t: PermType, key: &str, end: &str) -> Request {
    Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: t as i32,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
        }),
    })
}

fn put(key: &str, prev_kv: bool) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        prev_kv,
        ..Default::default()
    }
}

/// root (with the root role) and alice (role `r`: READWRITE on [a, c), READ on "ro"),
/// auth enabled.
fn secured() -> Store {
    let mut s = Store::new();
    for r in [
        Request::RoleAdd(AuthRoleAddRequest {
            name: "root".into(),
        }),
        user_add("root"),
        grant_role("root", "root"),
        Request::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
        grant_perm("r", PermType::Readwrite, "a", "c"),
        grant_perm("r", PermType::Read, "ro", ""),
        user_add("alice"),
        grant_role("alice", "r"),
        Request::AuthEnable(AuthEnableRequest {}),
    ] {
        apply(&mut s, r).unwrap();
    }
    s
}

#[test]
fn enabling_needs_the_root_user_with_the_root_role() {
    let mut s = Store::new();
    let enable = || Request::AuthEnable(AuthEnableRequest {});
    assert_eq!(
        auth_err(apply(&mut s, enable())),
        AuthError::RootUserNotExist
    );
    apply(&mut s, user_add("root")).unwrap();
    assert_eq!(
        auth_err(apply(&mut s, enable())),
        AuthError::RootRoleNotExist
    );
    // etcd 3.4 grants `root` even before a role of that name was created.
    apply(&mut s, grant_role("root", "root")).unwrap();
    assert!(matches!(
        apply(&mut s, enable()),
        Ok(Response::Auth(AuthApplied::Enabled))
    ));
    assert!(s.auth().is_enabled());
}

#[test]
fn management_errors_are_etcds() {
    let mut s = Store::new();
    apply(&mut s, user_add("u")).unwrap();
    assert_eq!(
        auth_err(apply(&mut s, user_add("u"))),
        AuthError::UserAlreadyExist
    );
    assert_eq!(auth_err(apply(&mut s, user_add(""))), AuthError::UserEmpty);
    assert_eq!(
        auth_err(apply(&mut s, grant_role("u", "nope"))),
        AuthError::RoleNotFound
    );
    assert_eq!(
        auth_err(apply(&mut s, grant_role("x", "root"))),
        AuthError::UserNotFound
    );
    let add_role = |n: &str| Request::RoleAdd(AuthRoleAddRequest { name: n.into() });
    assert_eq!(auth_err(apply(&mut s, add_role(""))), AuthError::RoleEmpty);
    apply(&mut s, add_role("r")).unwrap();
    assert_eq!(
        auth_err(apply(&mut s, add_role("r"))),
        AuthError::RoleAlreadyExist
    );
    let revoke = Request::UserRevokeRole(AuthUserRevokeRoleRequest {
        name: "u".into(),
        role: "r".into(),
    });
    assert_eq!(auth_err(apply(&mut s, revoke)), AuthError::RoleNotGranted);
    let revoke_perm = Request::RoleRevokePermission(AuthRoleRevokePermissionRequest {
        role: "r".into(),
        key: Bytes::from_static(b"k"),
        range_end: Bytes::new(),
    });
    assert_eq!(
        auth_err(apply(&mut s, revoke_perm)),
        AuthError::PermissionNotGranted
    );
    let del = Request::UserDelete(AuthUserDeleteRequest { name: "x".into() });
    assert_eq!(auth_err(apply(&mut s, del)), AuthError::UserNotFound);
    let del_role = Request::RoleDelete(AuthRoleDeleteRequest { role: "x".into() });
    assert_eq!(auth_err(apply(&mut s, del_role)), AuthError::RoleNotFound);
}

#[test]
fn every_change_moves_the_revision_and_a_repeated_grant_does_not() {
    let mut s = Store::new();
    let r0 = s.auth().revision();
    assert_eq!(r0, 1);
    apply(&mut s, user_add("root")).unwrap();
    apply(&mut s, grant_role("root", "root")).unwrap();
    assert_eq!(s.auth().revision(), 3);
    apply(&mut s, grant_role("root", "root")).unwrap();
    assert_eq!(s.auth().revision(), 3);
    apply(&mut s, Request::AuthEnable(AuthEnableRequest {})).unwrap();
    assert_eq!(
        s.auth().revision(),
        3,
        "enabling keeps the revision, as in etcd"
    );
}

#[test]
fn root_cannot_be_removed_while_auth_is_enabled() {
    let mut s = secured();
    let root = Some(("root", s.auth().revision()));
    let cases = [
        Request::UserDelete(AuthUserDeleteRequest {
            name: "root".into(),
        }),
        Request::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "root".into(),
            role: "root".into(),
        }),
        Request::RoleDelete(AuthRoleDeleteRequest {
            role: "root".into(),
        }),
    ];
    for r in cases {
        assert_eq!(
            auth_err(apply_as(&mut s, root, r)),
            AuthError::InvalidAuthMgmt
        );
    }
}

#[test]
fn management_needs_the_root_role_once_enabled() {
    let mut s = secured();
    let rev = s.auth().revision();
    assert_eq!(auth_err(apply(&mut s, user_add("x"))), AuthError::UserEmpty);
    assert_eq!(
        auth_err(apply_as(&mut s, Some(("alice", rev)), user_add("x"))),
        AuthError::PermissionDenied
    );
    assert_eq!(
        auth_err(apply_as(&mut s, Some(("ghost", rev)), user_add("x"))),
        AuthError::UserNotFound
    );
    apply_as(&mut s, Some(("root", rev)), user_add("x")).unwrap();
}

/// etcd's `checkLeasePuts`: attaching a lease to a key needs write access to every key
/// already attached to it (else the writer could not revoke the lease it extends), for a plain
/// put and for a put anywhere in a txn.
#[test]
fn a_put_may_attach_a_lease_only_if_the_writer_can_write_its_keys() {
    let mut s = secured();
    let rev = s.auth().revision();
    let (root, alice) = (Some(("root", rev)), Some(("alice", rev)));
    let grant = |id| Request::LeaseGrant(LeaseGrantRequest { id, ttl: 60 });
    apply_as(&mut s, alice, grant(7)).unwrap();
    apply_as(&mut s, alice, grant(8)).unwrap();
    let with_lease = |key: &str, lease| PutRequest {
        lease,
        ..put(key, false)
    };
    // Lease 7 holds only keys alice may write; lease 8 also holds root's "zzz".
    apply_as(&mut s, alice, Request::Put(with_lease("a1", 7))).unwrap();
    apply_as(&mut s, root, Request::Put(with_lease("zzz", 8))).unwrap();
    apply_as(&mut s, alice, Request::Put(with_lease("a2", 7))).unwrap();
    assert_eq!(
        auth_err(apply_as(&mut s, alice, Request::Put(with_lease("a3", 8)))),
        AuthError::PermissionDenied
    );
    let txn_put = |lease| {
        Request::Txn(TxnRequest {
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(with_lease("a4", lease))),
            }],
            ..Default::default()
        })
    };
    assert_eq!(
        auth_err(apply_as(&mut s, alice, txn_put(8))),
        AuthError::PermissionDenied
    );
    apply_as(&mut s, alice, txn_put(7)).unwrap();
    // root may attach anything.
    apply_as(&mut s, root, Request::Put(with_lease("b1", 8))).unwrap();
}

#[test]
fn key_permissions_on_puts_and_their_prev_kv() {
    let mut s = secured();
    let rev = s.auth().revision();
    let alice = Some(("alice", rev));
    apply_as(&mut s, alice, Request::Put(put("b", true))).unwrap();
    assert_eq!(
        auth_err(apply_as(&mut s, alice, Request::Put(put("c", false)))),
        AuthError::PermissionDenied
    );
    // READ alone does not allow a write.
    assert_eq!(
        auth_err(apply_as(&mut s, alice, Request::Put(put("ro", false)))),
        AuthError::PermissionDenied
    );
    assert_eq!(
        auth_err(apply(&mut s, Request::Put(put("b", false)))),
        AuthError::UserEmpty
    );
    apply_as(&mut s, Some(("root", rev)), Request::Put(put("zzz", false))).unwrap();
    assert_eq!(
        s.current_revision(),
        3,
        "only the two permitted puts were applied"
    );
}

#[test]
fn a_request_checked_before_a_permission_change_is_refused_at_apply() {
    let mut s = secured();
    let old = s.auth().revision();
    apply_as(
        &mut s,
        Some(("root", old)),
        Request::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"c"),
        }),
    )
    .unwrap();
    assert!(s.auth().revision() > old);
    assert_eq!(
        auth_err(apply_as(
            &mut s,
            Some(("alice", old)),
            Request::Put(put("b", false))
        )),
        AuthError::AuthOldRevision
    );
    let now = s.auth().revision();
    assert_eq!(
        auth_err(apply_as(
            &mut s,
            Some(("alice", now)),
            Request::Put(put("b", false))
        )),
        AuthError::PermissionDenied
    );
}

#[test]
fn every_operation_of_a_txn_is_checked_nested_ones_and_prev_kv_included() {
    let s = secured();
    let rev = s.auth().revision();
    let who = RequestAuth {
        username: "alice".into(),
        auth_revision: rev,
    };
    let checker = RequestChecker::new(s.auth(), Some(&who));
    let op_put = |k: &str, prev_kv| RequestOp {
        request: Some(request_op::Request::RequestPut(put(k, prev_kv))),
    };
    let txn = |ops: Vec<RequestOp>| TxnRequest {
        success: ops,
        ..Default::default()
    };
    assert!(checker.txn(&txn(vec![op_put("a", true)])).is_ok());
    let nested = RequestOp {
        request: Some(request_op::Request::RequestTxn(txn(vec![op_put(
            "x", false,
        )]))),
    };
    assert_eq!(
        checker.txn(&txn(vec![nested])),
        Err(AuthError::PermissionDenied)
    );
    let range = RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"d"),
            ..Default::default()
        })),
    };
    assert_eq!(
        checker.txn(&txn(vec![range])),
        Err(AuthError::PermissionDenied)
    );
    let compare_outside = TxnRequest {
        compare: vec![Compare {
            key: Bytes::from_static(b"zz"),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        checker.txn(&compare_outside),
        Err(AuthError::PermissionDenied)
    );
    assert!(checker.read(b"ro", b"").is_ok());
    assert_eq!(checker.write(b"ro", b""), Err(AuthError::PermissionDenied));
}

#[test]
fn deleting_a_role_takes_it_from_its_users() {
    let mut s = secured();
    let root = Some(("root", s.auth().revision()));
    apply_as(
        &mut s,
        root,
        Request::RoleDelete(AuthRoleDeleteRequest { role: "r".into() }),
    )
    .unwrap();
    assert!(!s.auth().has_role("alice", "r"));
}

#[test]
fn replicated_authenticate_rechecks_the_revision_and_no_password_users() {
    let mut s = secured();
    let rev = s.auth().revision();
    let record = |name: &str, rev| {
        Request::Authenticate(AuthenticateRecord {
            name: name.into(),
            token_prefix: "p".into(),
            auth_revision: rev,
        })
    };
    assert!(matches!(
        apply(&mut s, record("alice", rev)),
        Ok(Response::Auth(AuthApplied::Authenticated { .. }))
    ));
    assert_eq!(
        auth_err(apply(&mut s, record("alice", rev - 1))),
        AuthError::AuthOldRevision
    );
    assert_eq!(
        auth_err(apply(&mut s, record("ghost", rev))),
        AuthError::AuthFailed
    );
    let root = Some(("root", rev));
    apply_as(
        &mut s,
        root,
        Request::UserAdd(AuthUserAddRequest {
            name: "cn".into(),
            options: Some(UserAddOptions { no_password: true }),
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(s.auth().password_hash("cn"), Err(AuthError::NoPasswordUser));
    assert_eq!(s.auth().password_hash("alice"), Ok("hash-of-alice"));
}

#[test]
fn the_auth_state_survives_a_snapshot_and_old_snapshots_still_load() {
    let s = secured();
    let restored = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(restored.auth(), s.auth());
    assert!(restored == s);

    // A store without auth state writes no auth section: its image is the format from
    // before auth existed, and it restores with auth disabled.
    let mut fresh = Store::new();
    apply(&mut fresh, Request::Put(put("k", false))).unwrap();
    let image = fresh.snapshot();
    assert_eq!(
        &image[image.len() - 4 - 1..image.len() - 4],
        b"v",
        "no section after the keys"
    );
    let old = Store::restore(&image).unwrap();
    assert!(!old.auth().is_enabled());
    assert_eq!(old.auth().revision(), 1);
    assert_eq!(old.key_count(), 1);
}

#[test]
fn malformed_auth_sections_are_refused() {
    let mut image = secured().snapshot();
    // Flip the enabled flag byte of the auth section into an invalid value.
    let body_len = {
        let mut v = Vec::new();
        super::encode_snapshot(secured().auth(), &mut v);
        v.len()
    };
    let flag_at = image.len() - 4 - body_len;
    image[flag_at] = 7;
    let n = image.len();
    let checksum = crc32fast::hash(&image[..n - 4]);
    image[n - 4..].copy_from_slice(&checksum.to_be_bytes());
    assert!(Store::restore(&image).is_err());
    assert!(super::decode_snapshot(&[1, 0, 0]).is_err());
}
