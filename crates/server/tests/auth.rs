//! Authentication and authorisation on a real three-member cluster: users, roles and
//! permissions made through one member act on every member; refusals with etcd's codes
//! and texts (no user, wrong password, a simple token past its TTL, a token whose role
//! lost a permission, a watch outside the user's range); and no password or token in the
//! members' logs.

mod common;

use std::time::{Duration, Instant};

use common::{get, poll, put, Cluster};
use proto::authpb::{permission::Type as PermType, Permission};
use proto::etcdserverpb::auth_client::AuthClient;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::{
    watch_request::RequestUnion, AuthEnableRequest, AuthRoleAddRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserGrantRoleRequest, AuthenticateRequest, WatchCreateRequest, WatchRequest,
};
use raftkv_client::endpoint::connect;
use tonic::transport::Channel;
use tonic::{Code, Request};

const ROOT_PASSWORD: &str = "root-Secret-1f9c";
const ALICE_PASSWORD: &str = "alice-Secret-7d2e";
/// Simple tokens live this long without use.
const TOKEN_TTL: Duration = Duration::from_secs(2);

async fn channel(c: &Cluster, i: usize) -> Channel {
    let ep = c.endpoint(i);
    poll("connect", Duration::from_secs(20), || {
        let ep = ep.clone();
        async move { connect(&ep, Duration::from_secs(2)).await.ok() }
    })
    .await
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("token", token.parse().expect("token is ASCII"));
    r
}

async fn authenticate(auth: &mut AuthClient<Channel>, name: &str, password: &str) -> String {
    auth.authenticate(AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("authenticate {name}: {e:?}"))
    .into_inner()
    .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_tokens_and_refusals_across_members() {
    let c = Cluster::start(3, &["--auth-token-ttl=2", "--bcrypt-cost=4"]);
    c.leader().await;
    let mut auth0 = AuthClient::new(channel(&c, 0).await);
    let mut auth1 = AuthClient::new(channel(&c, 1).await);
    let mut kv1 = c.kv(1).await;

    // Enabling needs root with the root role.
    let refused = auth0.auth_enable(AuthEnableRequest {}).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: root user does not exist"
        )
    );
    auth0
        .role_add(AuthRoleAddRequest {
            name: "root".into(),
        })
        .await
        .unwrap();
    for (name, password) in [("root", ROOT_PASSWORD), ("alice", ALICE_PASSWORD)] {
        auth0
            .user_add(AuthUserAddRequest {
                name: name.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    auth0
        .user_grant_role(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .unwrap();
    auth0
        .role_add(AuthRoleAddRequest { name: "app".into() })
        .await
        .unwrap();
    auth0
        .role_grant_permission(AuthRoleGrantPermissionRequest {
            name: "app".into(),
            perm: Some(Permission {
                perm_type: PermType::Readwrite as i32,
                key: b"app/".to_vec().into(),
                range_end: b"app0".to_vec().into(),
            }),
        })
        .await
        .unwrap();
    auth0
        .user_grant_role(AuthUserGrantRoleRequest {
            user: "alice".into(),
            role: "app".into(),
        })
        .await
        .unwrap();
    auth0.auth_enable(AuthEnableRequest {}).await.unwrap();

    // Nobody: refused on another member too.
    let err = kv1.put(put("app/x", "v")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: user name is empty")
    );

    // A wrong password.
    let err = auth1
        .authenticate(AuthenticateRequest {
            name: "alice".into(),
            password: "not-her-password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password"
        )
    );

    // A token from member 0 works on member 1: simple tokens are replicated.
    let alice = authenticate(&mut auth0, "alice", ALICE_PASSWORD).await;
    kv1.put(with_token(put("app/x", "v"), &alice))
        .await
        .unwrap();
    let err = kv1
        .put(with_token(put("other", "v"), &alice))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, "etcdserver: permission denied")
    );
    let got = kv1.range(with_token(get("app/x"), &alice)).await.unwrap();
    assert_eq!(got.into_inner().kvs.len(), 1);

    // A watch outside her range is refused with etcd 3.4's reason.
    let mut watch = WatchClient::new(channel(&c, 2).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"other".to_vec().into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let stream = tokio_stream_from(rx);
    let mut responses = watch
        .watch(with_token(stream, &alice))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("watch answered")
        .unwrap()
        .unwrap();
    assert!(first.canceled && first.created, "{first:?}");
    assert_eq!(
        first.cancel_reason,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    drop(tx);

    // The role loses the permission: the same token can no longer write there.
    let root = authenticate(&mut auth1, "root", ROOT_PASSWORD).await;
    auth1
        .role_revoke_permission(with_token(
            AuthRoleRevokePermissionRequest {
                role: "app".into(),
                key: b"app/".to_vec().into(),
                range_end: b"app0".to_vec().into(),
            },
            &root,
        ))
        .await
        .unwrap();
    let mut kv0 = c.kv(0).await;
    let err = kv0
        .put(with_token(put("app/x", "v2"), &alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = kv0
        .range(with_token(get("app/x"), &alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // An unused simple token expires after --auth-token-ttl. Waiting is the point here:
    // the token must not be used meanwhile, since every use extends it.
    // Its lifetime starts on the member before the answer reaches us: counting from the
    // answer waits at least TOKEN_TTL + 0.5 s however long the authentication took.
    let short_lived = authenticate(&mut auth0, "root", ROOT_PASSWORD).await;
    let issued = Instant::now();
    tokio::time::sleep_until((issued + TOKEN_TTL + Duration::from_millis(500)).into()).await;
    let err = kv0
        .range(with_token(get("app/x"), &short_lived))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
    );

    // No password and no token in any member's log.
    let secrets = [ROOT_PASSWORD, ALICE_PASSWORD, &alice, &root, &short_lived];
    for i in 0..3 {
        let log = c.log(i);
        assert!(!log.is_empty(), "member {i} wrote no log");
        for secret in secrets {
            let prefix = secret.split('.').next().unwrap_or(secret);
            assert!(
                !log.contains(prefix),
                "member {i}'s log contains a secret ({} chars)",
                secret.len()
            );
        }
    }
}

/// A request stream for a client-streaming call, from a channel.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<WatchRequest>,
) -> impl futures_util::Stream<Item = WatchRequest> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
