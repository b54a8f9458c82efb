//! `gr1` token verification on arbitrary strings, against a known key.
//! Verification must not panic; a token it accepts must be exactly the token
//! that minting its claims produces (no second spelling of a valid token:
//! base64, lengths and signature are all canonical).
#![no_main]

use georelay::auth::{TokenKey, mint, verify};
use georelay::ids::AppId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let key = TokenKey::new(b"fuzz-secret");
    let keys = |app: &AppId| (app.as_str() == "app").then(|| key.clone());
    if let Ok(claims) = verify(token, &keys, None, 0) {
        assert!(claims.validate().is_ok());
        assert_eq!(mint(&claims, &key), token);
    }
});
