//! Standard JWTs through a running relay: the fleet's apps name their JWT
//! public keys in regions.toml; tokens minted by `jose` (the fixtures of
//! tests/data/jwt/) and by `georelay::auth::mint_jwt` are admitted, and
//! every bad case is refused with `UNAUTHORIZED` and its reason. Nothing in
//! the relay knows the token format: admission calls the same verifier.

mod support;

use std::path::Path;

use georelay::auth::{self, Claims, JwtSigningKey, Role};
use georelay::client::{Client, ClientError, Join};
use georelay::clock::{Clock, SystemClock};
use georelay::error::ErrorCode;
use georelay::ids::AppId;
use support::fleet::{FleetSpec, TestFleet};

fn fixtures() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt/tokens.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}"))
}

async fn fleet() -> TestFleet {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt");
    let apps = format!(
        r#"
[apps.interop-app]
secret = "jose-interop-secret"
allow_regions = ["eu"]

[apps.interop-es]
secret = "unused-es-secret"
allow_regions = ["eu"]
jwt_public_key_file = "{}"
"#,
        keys.join("es256.pub.pem").display()
    );
    TestFleet::start(FleetSpec {
        apps,
        ..FleetSpec::default()
    })
    .await
}

async fn join(
    fleet: &TestFleet,
    app: &str,
    channel: &str,
    token: &str,
) -> Result<Client, ClientError> {
    let join = Join {
        app: app.to_owned(),
        channel: channel.to_owned(),
        token: token.to_owned(),
    };
    Client::connect(
        &fleet.options(Some("DE")),
        &[fleet.target("eu-fra-1")],
        &join,
    )
    .await
}

fn refusal(result: Result<Client, ClientError>) -> (Option<ErrorCode>, String) {
    match result {
        Ok(_) => (None, "admitted".to_owned()),
        Err(err) => (err.code(), err.to_string()),
    }
}

#[tokio::test]
async fn jose_minted_hs256_and_es256_tokens_are_admitted_by_the_relay() {
    let fleet = fleet().await;
    let tokens = fixtures();
    let token = |name: &str| tokens[name].as_str().unwrap_or_default().to_owned();

    let hs = join(&fleet, "interop-app", "room-1", &token("hs256")).await;
    let hs = hs.unwrap_or_else(|err| panic!("HS256: {err}"));
    assert_eq!(hs.node(), "eu-fra-1");
    let es = join(&fleet, "interop-es", "room-1", &token("es256")).await;
    assert!(es.is_ok(), "ES256: {:?}", es.err());

    for (name, says) in [
        ("wrong_audience", "audience"),
        ("expired", "expired"),
        ("not_yet_valid", "not valid before"),
        ("es256_for_hs_only_app", "algorithm"),
    ] {
        let (code, message) = refusal(join(&fleet, "interop-app", "room-1", &token(name)).await);
        assert_eq!(code, Some(ErrorCode::Unauthorized), "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
    }
}

#[tokio::test]
async fn another_channel_another_app_and_alg_none_are_unauthorized() {
    let fleet = fleet().await;
    let now = SystemClock.now_unix_secs();
    let claims = Claims {
        app: AppId::new("interop-app"),
        channel: "room-1".to_owned(),
        user: "dave".to_owned(),
        role: Role::Publish,
        expires_at: now + 600,
    };
    let hs = auth::mint_jwt(&claims, &JwtSigningKey::hs256(b"jose-interop-secret"), now)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(join(&fleet, "interop-app", "room-1", &hs).await.is_ok());

    let (code, message) = refusal(join(&fleet, "interop-app", "room-2", &hs).await);
    assert_eq!(code, Some(ErrorCode::Unauthorized), "{message}");
    assert!(message.contains("another channel"), "{message}");

    let (code, message) = refusal(join(&fleet, "interop-es", "room-1", &hs).await);
    assert_eq!(code, Some(ErrorCode::Unauthorized), "{message}");
    assert!(message.contains("expected interop-es"), "{message}");

    // `alg: none`: the header and claims of the good token, no signature.
    let (_, rest) = hs.split_once('.').unwrap_or_default();
    let (body, _) = rest.split_once('.').unwrap_or_default();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
    let (code, message) = refusal(join(&fleet, "interop-app", "room-1", &none).await);
    assert_eq!(code, Some(ErrorCode::Unauthorized), "{message}");
    assert!(message.contains("\"none\""), "{message}");
}
