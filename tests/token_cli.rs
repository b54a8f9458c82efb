//! `georelay token` through the binary: the token it prints verifies with
//! `auth::verify` under the app's secret, and bad input exits 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use georelay::auth::{self, Role, TokenError, TokenKey};
use georelay::ids::AppId;

const ENV_VAR: &str = "GEORELAY_TOKEN_CLI_TEST_SECRET";

/// The one region and node of the test fleets, before their apps.
const FLEET_NODES: &str = r#"
[regions.eu]
countries = ["DE"]

[nodes.eu-1]
region = "eu"
listen = "127.10.0.1:4433"
admin = "127.10.0.1:9090"
"#;

/// Writes `regions.toml` in `dir`: [`FLEET_NODES`] and then `apps`.
fn write_config(dir: &Path, apps: &str) -> PathBuf {
    let path = dir.join("regions.toml");
    std::fs::write(&path, format!("{FLEET_NODES}{apps}")).unwrap_or_else(|err| panic!("{err}"));
    path
}

fn write_fleet(dir: &Path) -> PathBuf {
    write_config(
        dir,
        &format!(
            r#"
[apps.inline-app]
secret = "inline-dev-secret"
allow_regions = ["eu"]

[apps.env-app]
secret_env = "{ENV_VAR}"
allow_regions = ["eu"]
"#
        ),
    )
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

fn jwt_fleet(dir: &Path, public_pem: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("keys")).unwrap_or_else(|err| panic!("{err}"));
    std::fs::write(dir.join("keys/app.pub.pem"), public_pem).unwrap_or_else(|err| panic!("{err}"));
    write_config(
        dir,
        r#"
[apps.inline-app]
secret = "inline-dev-secret"
allow_regions = ["eu"]
jwt_public_key_file = "keys/app.pub.pem"
"#,
    )
}

const JWT_ARGS: [&str; 10] = [
    "--app",
    "inline-app",
    "--channel",
    "room-1",
    "--user",
    "bob",
    "--role",
    "publish",
    "--format",
    "jwt",
];

#[test]
fn format_jwt_prints_an_hs256_jwt_that_the_fleet_admits() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let config = write_fleet(dir.path());
    let token = printed_token(&token_cmd(&config, &JWT_ARGS, None));
    let header = token.split('.').next().unwrap_or_default();
    assert!(token.starts_with("eyJ"), "{token}");
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
        .unwrap_or_default();
    assert!(String::from_utf8_lossy(&decoded).contains("\"HS256\""));

    let key = TokenKey::new(b"inline-dev-secret");
    let app = AppId::new("inline-app");
    let claims = auth::verify(&token, &|_| Some(key.clone()), Some(&app), unix_now())
        .unwrap_or_else(|err| panic!("{err}: {token}"));
    assert_eq!(
        (claims.channel.as_str(), claims.user.as_str(), claims.role),
        ("room-1", "bob", Role::Publish)
    );
}

#[test]
fn format_jwt_with_a_private_key_signs_es256_and_eddsa_that_the_public_key_verifies() {
    for (algorithm, alg) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "ES256"),
        (&rcgen::PKCS_ED25519, "EdDSA"),
    ] {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let pair = rcgen::KeyPair::generate_for(algorithm).unwrap_or_else(|err| panic!("{err}"));
        let config = jwt_fleet(dir.path(), &pair.public_key_pem());
        let private = dir.path().join("app.key.pem");
        std::fs::write(&private, pair.serialize_pem()).unwrap_or_else(|err| panic!("{err}"));
        let mut args = JWT_ARGS.to_vec();
        args.extend(["--key", private.to_str().unwrap_or_default()]);
        let token = printed_token(&token_cmd(&config, &args, None));
        let header = token.split('.').next().unwrap_or_default();
        let decoded =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap_or_default();
        assert!(String::from_utf8_lossy(&decoded).contains(alg), "{alg}");

        let fleet = georelay::config::Fleet::load(&config).unwrap_or_else(|err| panic!("{err}"));
        let ring = auth::Keyring::from_fleet(&fleet).unwrap_or_else(|err| panic!("{err}"));
        let claims = ring
            .verify(&token, None, unix_now())
            .unwrap_or_else(|err| panic!("{alg}: {err}"));
        assert_eq!(claims.user, "bob");

        // The same key signs nothing the app's secret alone would admit.
        let without_key = auth::Keyring::from_keys([(
            AppId::new("inline-app"),
            TokenKey::new(b"inline-dev-secret"),
        )]);
        assert!(matches!(
            without_key.verify(&token, None, unix_now()),
            Err(TokenError::AlgorithmNotAllowed(_))
        ));
    }
}

#[test]
fn a_bad_key_file_or_key_without_jwt_exits_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let config = write_fleet(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "nope").unwrap_or_else(|err| panic!("{err}"));
    let garbage = garbage.to_str().unwrap_or_default();
    let mut with_key = JWT_ARGS.to_vec();
    with_key.extend(["--key", garbage]);
    let gr1_with_key = [
        "--app",
        "inline-app",
        "--channel",
        "c",
        "--user",
        "u",
        "--role",
        "publish",
        "--key",
        garbage,
    ];
    for (args, mentions) in [
        (&with_key[..], "PRIVATE KEY"),
        (&gr1_with_key[..], "--format jwt"),
    ] {
        let output = token_cmd(&config, args, None);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(mentions), "{stderr}");
    }
}
