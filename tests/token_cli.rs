//! `georelay token` through the binary: the token it prints verifies with
//! `auth::verify` under the app's secret, and bad input exits 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use georelay::auth::{self, Role, TokenError, TokenKey};
use georelay::ids::AppId;

const ENV_VAR: &str = "GEORELAY_TOKEN_CLI_TEST_SECRET";

fn write_fleet(dir: &Path) -> PathBuf {
    let config = format!(
        r#"
[regions.eu]
countries = ["DE"]

[nodes.eu-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"

[apps.inline-app]
secret = "inline-dev-secret"
allow_regions = ["eu"]

[apps.env-app]
secret_env = "{ENV_VAR}"
allow_regions = ["eu"]
"#
    );
    let path = dir.join("regions.toml");
    std::fs::write(&path, config).unwrap_or_else(|err| panic!("{err}"));
    path
}

fn token_cmd(config: &Path, args: &[&str], secret_env: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_georelay"));
    command.arg("token").arg("--config").arg(config).args(args);
    match secret_env {
        Some(value) => command.env(ENV_VAR, value),
        None => command.env_remove(ENV_VAR),
    };
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run georelay: {err}"))
}

fn unix_now() -> u64 {
    use georelay::clock::Clock;
    georelay::clock::SystemClock.now_unix_secs()
}

fn printed_token(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_minted_token_verifies_with_the_apps_secret_and_carries_the_claims() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let config = write_fleet(dir.path());
    let before = unix_now();
    let args = [
        "--app",
        "inline-app",
        "--channel",
        "room 1",
        "--user",
        "alice",
        "--role",
        "subscribe",
        "--ttl",
        "120",
    ];
    let token = printed_token(&token_cmd(&config, &args, None));
    let after = unix_now();

    let key = TokenKey::new(b"inline-dev-secret");
    let app = AppId::new("inline-app");
    let claims = auth::verify(
        &token,
        &|id| (*id == app).then(|| key.clone()),
        Some(&app),
        after,
    )
    .unwrap_or_else(|err| panic!("{err}: {token}"));
    assert_eq!(claims.app, app);
    assert_eq!(claims.channel, "room 1");
    assert_eq!(claims.user, "alice");
    assert_eq!(claims.role, Role::Subscribe);
    assert!(
        (before + 120..=after + 120).contains(&claims.expires_at),
        "{claims:?}"
    );

    let expired = auth::verify(&token, &|_| Some(key.clone()), None, claims.expires_at);
    assert!(
        matches!(expired, Err(TokenError::Expired { .. })),
        "{expired:?}"
    );
    let wrong_key = TokenKey::new(b"another secret");
    let forged = auth::verify(&token, &|_| Some(wrong_key.clone()), None, after);
    assert_eq!(forged, Err(TokenError::BadSignature));
}

#[test]
fn an_env_secret_is_read_and_an_unset_one_is_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let config = write_fleet(dir.path());
    let args = [
        "--app",
        "env-app",
        "--channel",
        "c",
        "--user",
        "u",
        "--role",
        "publish",
    ];
    let token = printed_token(&token_cmd(&config, &args, Some("from-the-environment")));
    let key = TokenKey::new(b"from-the-environment");
    let claims = auth::verify(&token, &|_| Some(key.clone()), None, unix_now())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(claims.role, Role::Publish);

    let unset = token_cmd(&config, &args, None);
    assert_eq!(unset.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(stderr.contains(ENV_VAR), "{stderr}");
    assert!(stderr.contains("env-app"), "{stderr}");
}

#[test]
fn invalid_input_exits_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let config = write_fleet(dir.path());
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--app",
                "nope",
                "--channel",
                "c",
                "--user",
                "u",
                "--role",
                "publish",
            ],
            "nope",
        ),
        (
            &[
                "--app",
                "inline-app",
                "--channel",
                "c",
                "--user",
                "u",
                "--role",
                "admin",
            ],
            "admin",
        ),
        (
            &[
                "--app",
                "inline-app",
                "--channel",
                "",
                "--user",
                "u",
                "--role",
                "publish",
            ],
            "channel",
        ),
        (
            &[
                "--app",
                "inline-app",
                "--channel",
                "c",
                "--user",
                "u",
                "--role",
                "publish",
                "--ttl",
                "0",
            ],
            "--ttl",
        ),
    ];
    for (args, mentions) in cases {
        let output = token_cmd(&config, args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}
