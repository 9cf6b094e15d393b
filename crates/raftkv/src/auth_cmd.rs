//! `raftkv user …`, `raftkv role …` and `raftkv auth …`: etcd's Auth service, with
//! etcdctl's arguments and its printed lines (simple output format).

use std::io::BufRead;

use anyhow::{bail, Result};
use proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use proto::etcdserverpb::auth_client::AuthClient;
use proto::etcdserverpb::*;
use proto::prost::bytes::Bytes;
use raftkv_client::client::prefix_range_end;

use crate::cli::{AuthCommand, GlobalOptions, RoleCommand, UserCommand};
use crate::commands::{client, emit};

/// One Auth RPC with failover and the client's token.
macro_rules! call {
    ($client:expr, $method:ident, $req:expr) => {
        rpc!($client, AuthClient, $method, $req)
    };
}

/// A password from standard input: one line, or (interactively) twice, compared.
fn read_password(prompt: &str, confirm: bool) -> Result<String> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    eprint!("{prompt}: ");
    let first = lines.next().transpose()?.unwrap_or_default();
    if confirm {
        eprint!("Type password again for confirmation: ");
        let again = lines.next().transpose()?.unwrap_or_default();
        if again != first {
            bail!("given passwords are different");
        }
    }
    if first.is_empty() {
        bail!("empty password");
    }
    Ok(first)
}

/// `name[:password]`, prompting for the password when absent.
pub fn split_user(spec: &str, password: Option<&str>) -> Result<(String, String)> {
    match (spec.split_once(':'), password) {
        (Some(_), Some(_)) => {
            bail!("--user shouldn't include password when --password is given")
        }
        (Some((name, pw)), None) => Ok((name.to_string(), pw.to_string())),
        (None, Some(pw)) => Ok((spec.to_string(), pw.to_string())),
        (None, None) => Ok((spec.to_string(), read_password("Password", false)?)),
    }
}

fn key_range(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> (Bytes, Bytes) {
    let k = key.as_bytes().to_vec();
    let e = if prefix {
        prefix_range_end(&k)
    } else if from_key {
        vec![0]
    } else {
        end.map(|e| e.as_bytes().to_vec()).unwrap_or_default()
    };
    (Bytes::from(k), Bytes::from(e))
}

pub async fn user(global: &GlobalOptions, cmd: &UserCommand) -> Result<()> {
    let c = client(global).await?;
    let out = match cmd {
        UserCommand::Add {
            name,
            no_password,
            interactive,
        } => {
            let (name, password) = match name.split_once(':') {
                _ if *no_password => (name.clone(), String::new()),
                Some((n, p)) => (n.to_string(), p.to_string()),
                None => (
                    name.clone(),
                    read_password(&format!("Password of {name}"), *interactive)?,
                ),
            };
            call!(
                c,
                user_add,
                AuthUserAddRequest {
                    name: name.clone(),
                    password,
                    options: Some(UserAddOptions {
                        no_password: *no_password
                    }),
                    ..Default::default()
                }
            );
            format!("User {name} created\n")
        }
        UserCommand::Delete { name } => {
            call!(c, user_delete, AuthUserDeleteRequest { name: name.clone() });
            format!("User {name} deleted\n")
        }
        UserCommand::Get { name, detail } => {
            let r = call!(c, user_get, AuthUserGetRequest { name: name.clone() });
            if *detail {
                let mut out = format!("User: {name}\n");
                for role in &r.roles {
                    let p = call!(c, role_get, AuthRoleGetRequest { role: role.clone() });
                    out.push('\n');
                    out.push_str(&role_text(role, &p.perm));
                }
                out
            } else {
                let roles: String = r.roles.iter().map(|r| format!(" {r}")).collect();
                format!("User: {name}\nRoles:{roles}\n")
            }
        }
        UserCommand::List => {
            let r = call!(c, user_list, AuthUserListRequest {});
            r.users.iter().map(|u| format!("{u}\n")).collect()
        }
        UserCommand::Passwd { name, interactive } => {
            let password = read_password(&format!("Password of {name}"), *interactive)?;
            call!(
                c,
                user_change_password,
                AuthUserChangePasswordRequest {
                    name: name.clone(),
                    password,
                    ..Default::default()
                }
            );
            "Password updated\n".to_string()
        }
        UserCommand::GrantRole { name, role } => {
            call!(
                c,
                user_grant_role,
                AuthUserGrantRoleRequest {
                    user: name.clone(),
                    role: role.clone()
                }
            );
            format!("Role {role} is granted to user {name}\n")
        }
        UserCommand::RevokeRole { name, role } => {
            call!(
                c,
                user_revoke_role,
                AuthUserRevokeRoleRequest {
                    name: name.clone(),
                    role: role.clone()
                }
            );
            format!("Role {role} is revoked from user {name}\n")
        }
    };
    emit(&out)
}

/// etcdctl's `role get` text.
fn role_text(role: &str, perms: &[Permission]) -> String {
    let mut out = format!("Role {role}\n");
    for (title, want) in [("KV Read:", PermType::Read), ("KV Write:", PermType::Write)] {
        out.push_str(title);
        out.push('\n');
        for p in perms {
            let t = PermType::try_from(p.perm_type).unwrap_or(PermType::Read);
            if t != want && t != PermType::Readwrite {
                continue;
            }
            let key = String::from_utf8_lossy(&p.key);
            let end = String::from_utf8_lossy(&p.range_end);
            let line = if p.range_end.is_empty() {
                format!("\t{key}\n")
            } else if p.range_end.as_ref() == [0] {
                format!("\t[{key}, <open ended>\n")
            } else if prefix_range_end(&p.key) == p.range_end.as_ref() {
                format!("\t[{key}, {end}) (prefix {key})\n")
            } else {
                format!("\t[{key}, {end})\n")
            };
            out.push_str(&line);
        }
    }
    out
}

pub async fn role(global: &GlobalOptions, cmd: &RoleCommand) -> Result<()> {
    let c = client(global).await?;
    let out = match cmd {
        RoleCommand::Add { name } => {
            call!(c, role_add, AuthRoleAddRequest { name: name.clone() });
            format!("Role {name} created\n")
        }
        RoleCommand::Delete { name } => {
            call!(c, role_delete, AuthRoleDeleteRequest { role: name.clone() });
            format!("Role {name} deleted\n")
        }
        RoleCommand::Get { name } => {
            let r = call!(c, role_get, AuthRoleGetRequest { role: name.clone() });
            role_text(name, &r.perm)
        }
        RoleCommand::List => {
            let r = call!(c, role_list, AuthRoleListRequest {});
            r.roles.iter().map(|r| format!("{r}\n")).collect()
        }
        RoleCommand::GrantPermission {
            name,
            perm_type,
            key,
            range_end,
            prefix,
            from_key,
        } => {
            let perm_type = match perm_type.to_ascii_lowercase().as_str() {
                "read" => PermType::Read,
                "write" => PermType::Write,
                "readwrite" => PermType::Readwrite,
                other => bail!("invalid permission type {other}"),
            };
            let (key, range_end) = key_range(key, range_end.as_deref(), *prefix, *from_key);
            call!(
                c,
                role_grant_permission,
                AuthRoleGrantPermissionRequest {
                    name: name.clone(),
                    perm: Some(Permission {
                        perm_type: perm_type as i32,
                        key,
                        range_end
                    }),
                }
            );
            format!("Role {name} updated\n")
        }
        RoleCommand::RevokePermission {
            name,
            key,
            range_end,
            prefix,
            from_key,
        } => {
            let (k, end) = key_range(key, range_end.as_deref(), *prefix, *from_key);
            call!(
                c,
                role_revoke_permission,
                AuthRoleRevokePermissionRequest {
                    role: name.clone(),
                    key: k,
                    range_end: end.clone(),
                }
            );
            if end.is_empty() {
                format!("Permission of key {key} is revoked from role {name}\n")
            } else {
                let end = String::from_utf8_lossy(&end);
                format!("Permission of range [{key}, {end}) is revoked from role {name}\n")
            }
        }
    };
    emit(&out)
}

pub async fn auth(global: &GlobalOptions, cmd: &AuthCommand) -> Result<()> {
    let c = client(global).await?;
    let out = match cmd {
        AuthCommand::Enable => {
            call!(c, auth_enable, AuthEnableRequest {});
            "Authentication Enabled\n".to_string()
        }
        AuthCommand::Disable => {
            call!(c, auth_disable, AuthDisableRequest {});
            "Authentication Disabled\n".to_string()
        }
        AuthCommand::Status => {
            let r = call!(c, auth_status, AuthStatusRequest {});
            format!(
                "Authentication Status: {}\nAuthRevision: {}\n",
                r.enabled, r.auth_revision
            )
        }
    };
    emit(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_get_prints_like_etcdctl() {
        let perm = |t: PermType, k: &str, e: &[u8]| Permission {
            perm_type: t as i32,
            key: Bytes::copy_from_slice(k.as_bytes()),
            range_end: Bytes::copy_from_slice(e),
        };
        let text = role_text(
            "r1",
            &[
                perm(PermType::Readwrite, "a", b"z"),
                perm(PermType::Read, "foo", b""),
                perm(PermType::Readwrite, "k", b"\0"),
                perm(PermType::Write, "pre", b"prf"),
            ],
        );
        assert_eq!(
            text,
            "Role r1\nKV Read:\n\t[a, z)\n\tfoo\n\t[k, <open ended>\nKV Write:\n\t[a, z)\n\t[k, <open ended>\n\t[pre, prf) (prefix pre)\n"
        );
        assert_eq!(
            split_user("u:p", None).unwrap(),
            ("u".to_string(), "p".to_string())
        );
        assert!(split_user("u:p", Some("q")).is_err());
    }
}
