//! The server's subscription secrets: the Ed25519 key that signs webhooks (§6.5, §7.1) and
//! the HMAC key of callback and claim tokens (§7.3, §12.9).
//!
//! - Webhooks carry `Webhook-Signature: t=<unix seconds>,kid=<kid>,ed25519=<signature>`, the
//!   signature over `<t>.<raw body>`, unpadded base64url.
//! - `kid` is `ds_` followed by the key's RFC 7638 thumbprint: unpadded base64url of the
//!   SHA-256 of `{"crv":"Ed25519","kty":"OKP","x":"<x>"}`, so it is stable for the key's
//!   lifetime and derived from it.
//! - Tokens are HS256 JWTs whose claims bind them to one subscription incarnation, one
//!   generation, one wake and one use (callback or claim), with an expiry.
//!
//! Where the keys live (generated once in the data directory, or given by a file) is the
//! caller's; here they are bytes in and bytes out.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

/// Bytes of the token HMAC key.
pub const TOKEN_KEY_BYTES: usize = 32;
/// Lifetime of callback and claim tokens, in seconds (fencing and the lease bound a wake;
/// the expiry bounds a leaked token).
pub const TOKEN_TTL_SECS: u64 = 3600;

/// Random bytes from the operating system.
///
/// # Errors
/// If the system's random source fails.
pub fn random<const N: usize>() -> Result<[u8; N], ring::error::Unspecified> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out)?;
    Ok(out)
}

/// A fresh wake id: `w_` and 24 hex digits (12 random bytes).
///
/// # Errors
/// If the system's random source fails.
pub fn wake_id() -> Result<String, ring::error::Unspecified> {
    let bytes: [u8; 12] = random()?;
    let mut out = String::with_capacity(26);
    out.push_str("w_");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// The webhook signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    x: String,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of a 32-byte Ed25519 seed (the private key as RFC 8032 defines it).
    ///
    /// # Errors
    /// If the seed is not 32 bytes.
    pub fn from_seed(seed: &[u8]) -> Result<SigningKey, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)?;
        let x = B64.encode(pair.public_key().as_ref());
        let kid = thumbprint_kid(&x);
        Ok(SigningKey { pair, x, kid })
    }

    /// The key of a PKCS#8 (v1 or v2) Ed25519 private key, DER-encoded.
    ///
    /// # Errors
    /// If the document is not an Ed25519 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)?;
        let x = B64.encode(pair.public_key().as_ref());
        let kid = thumbprint_kid(&x);
        Ok(SigningKey { pair, x, kid })
    }

    /// A new random key and its seed (to store).
    ///
    /// # Errors
    /// If the system's random source fails.
    pub fn generate() -> Result<(SigningKey, [u8; 32]), ring::error::Unspecified> {
        let seed: [u8; 32] = random()?;
        let key = SigningKey::from_seed(&seed).map_err(|_| ring::error::Unspecified)?;
        Ok((key, seed))
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (§6.5).
    #[must_use]
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid, "use": "sig", "alg": "EdDSA"})
    }

    /// The `Webhook-Signature` value for `body` sent at `t_secs`.
    #[must_use]
    pub fn signature_header(&self, t_secs: u64, body: &[u8]) -> String {
        let t = t_secs.to_string();
        let mut signed = Vec::with_capacity(t.len() + 1 + body.len());
        signed.extend_from_slice(t.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        let sig = self.pair.sign(&signed);
        format!("t={t},kid={},ed25519={}", self.kid, B64.encode(sig.as_ref()))
    }
}

/// `ds_` and the RFC 7638 thumbprint of the Ed25519 public key `x` (unpadded base64url).
#[must_use]
pub fn thumbprint_kid(x: &str) -> String {
    // The required members of an OKP key, in lexicographic order, without whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    format!("ds_{}", B64.encode(digest.as_ref()))
}

/// What a token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// A webhook's callback.
    Callback,
    /// A pull-wake worker's ack and release.
    Claim,
}

impl Use {
    fn as_str(self) -> &'static str {
        match self {
            Use::Callback => "callback",
            Use::Claim => "claim",
        }
    }
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The subscription id.
    pub subscription: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// The generation of the wake.
    pub generation: u64,
    /// The wake.
    pub wake_id: String,
    /// What it is for.
    pub usage: Use,
    /// Expiry, Unix seconds.
    pub exp_secs: u64,
}

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// 401 `TOKEN_INVALID`: malformed, badly signed, or for another subscription or use.
    Invalid,
    /// 401 `TOKEN_EXPIRED`: well signed, but past its expiry.
    Expired,
}

/// The HMAC key of callback and claim tokens (HS256).
pub struct TokenKey(ring::hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl TokenKey {
    /// A key from its secret bytes.
    #[must_use]
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// A token carrying `claims`.
    #[must_use]
    pub fn mint(&self, claims: &Claims) -> String {
        let payload = json!({
            "sub": claims.subscription,
            "inc": claims.incarnation,
            "gen": claims.generation,
            "wake": claims.wake_id,
            "use": claims.usage.as_str(),
            "exp": claims.exp_secs,
        });
        let mut token = B64.encode(JWT_HEADER);
        token.push('.');
        token.push_str(&B64.encode(payload.to_string()));
        let tag = ring::hmac::sign(&self.0, token.as_bytes());
        token.push('.');
        token.push_str(&B64.encode(tag.as_ref()));
        token
    }

    /// The claims of a token for `subscription` and `usage`, checked at `now_secs`.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] unless well formed, signed with this key, of this
    /// subscription and use; then [`TokenError::Expired`] if past its expiry.
    pub fn verify(
        &self,
        token: &str,
        subscription: &str,
        usage: Use,
        now_secs: u64,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify_signed(token, subscription, usage)?;
        if now_secs > claims.exp_secs {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a token for `subscription` and `usage`, whatever its expiry: a stale
    /// request with a well-signed token is fenced (409) before its expiry counts (§7.3).
    ///
    /// # Errors
    /// [`TokenError::Invalid`] unless well formed, signed with this key, of this
    /// subscription and use.
    pub fn verify_signed(
        &self,
        token: &str,
        subscription: &str,
        usage: Use,
    ) -> Result<Claims, TokenError> {
        let payload = self.verified_payload(token)?;
        let field = |name: &str| payload.get(name);
        let text = |name: &str| field(name).and_then(Value::as_str).ok_or(TokenError::Invalid);
        let number = |name: &str| field(name).and_then(Value::as_u64).ok_or(TokenError::Invalid);
        let claims = Claims {
            subscription: text("sub")?.to_owned(),
            incarnation: number("inc")?,
            generation: number("gen")?,
            wake_id: text("wake")?.to_owned(),
            usage: match text("use")? {
                "callback" => Use::Callback,
                "claim" => Use::Claim,
                _ => return Err(TokenError::Invalid),
            },
            exp_secs: number("exp")?,
        };
        if claims.subscription != subscription || claims.usage != usage {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// The payload of an HS256 JWT signed with this key (any claims: also used for the
    /// service tokens of claims when a claim secret is set).
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for anything but a well-formed, well-signed HS256 JWT whose
    /// payload is a JSON object.
    pub fn verified_payload(
        &self,
        token: &str,
    ) -> Result<serde_json::Map<String, Value>, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let tag = B64.decode(tag).map_err(|_| TokenError::Invalid)?;
        let signed = &token[..header.len() + 1 + payload.len()];
        ring::hmac::verify(&self.0, signed.as_bytes(), &tag).map_err(|_| TokenError::Invalid)?;
        let header: Value = B64
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(TokenError::Invalid)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(TokenError::Invalid);
        }
        match B64.decode(payload).ok().and_then(|p| serde_json::from_slice(&p).ok()) {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(TokenError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    /// RFC 8037, appendix A: the example Ed25519 key, its public part and its RFC 7638
    /// thumbprint.
    #[test]
    fn the_rfc_8037_key_has_the_rfc_thumbprint() {
        let seed = B64.decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap();
        let key = SigningKey::from_seed(&seed).unwrap();
        assert_eq!(key.jwk()["x"], "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(key.kid(), "ds_kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let jwk = key.jwk();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
            (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
        );
    }

    #[test]
    fn webhook_signatures_verify_over_time_dot_body() {
        let (key, seed) = SigningKey::generate().unwrap();
        assert_eq!(SigningKey::from_seed(&seed).unwrap().kid(), key.kid(), "stable for the key");
        let body = br#"{"subscription_id":"s"}"#;
        let header = key.signature_header(1_764_500_000, body);
        let (t, rest) = header.strip_prefix("t=").unwrap().split_once(",kid=").unwrap();
        let (kid, sig) = rest.split_once(",ed25519=").unwrap();
        assert_eq!((t, kid), ("1764500000", key.kid()));
        assert!(!sig.contains('='), "unpadded");
        let public = B64.decode(key.jwk()["x"].as_str().unwrap()).unwrap();
        let sig = B64.decode(sig).unwrap();
        let verifier = UnparsedPublicKey::new(&ED25519, &public);
        assert!(verifier.verify(b"1764500000.{\"subscription_id\":\"s\"}", &sig).is_ok());
        assert!(verifier.verify(b"1764500001.{\"subscription_id\":\"s\"}", &sig).is_err());
    }

    fn claims() -> Claims {
        Claims {
            subscription: "sub-1".into(),
            incarnation: 9,
            generation: 3,
            wake_id: "w_0123".into(),
            usage: Use::Callback,
            exp_secs: 1_000,
        }
    }

    #[test]
    fn tokens_verify_only_for_their_subscription_use_key_and_time() {
        let key = TokenKey::new(&[7; TOKEN_KEY_BYTES]);
        let token = key.mint(&claims());
        assert_eq!(key.verify(&token, "sub-1", Use::Callback, 1_000), Ok(claims()));
        assert_eq!(key.verify(&token, "sub-1", Use::Callback, 1_001), Err(TokenError::Expired));
        assert_eq!(key.verify(&token, "sub-2", Use::Callback, 0), Err(TokenError::Invalid));
        assert_eq!(key.verify(&token, "sub-1", Use::Claim, 0), Err(TokenError::Invalid));
        let other = TokenKey::new(&[8; TOKEN_KEY_BYTES]);
        assert_eq!(other.verify(&token, "sub-1", Use::Callback, 0), Err(TokenError::Invalid));
        // Any change to any part is refused.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != token {
                assert_eq!(
                    key.verify(&tampered, "sub-1", Use::Callback, 0),
                    Err(TokenError::Invalid),
                    "{i}"
                );
            }
        }
        for junk in ["", "a.b", "a.b.c.d", "..", "x.y.z", &format!("{token}.")] {
            assert_eq!(
                key.verify(junk, "sub-1", Use::Callback, 0),
                Err(TokenError::Invalid),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn a_token_is_a_standard_hs256_jwt() {
        let key = TokenKey::new(b"secret");
        let token = key.mint(&claims());
        let header = B64.decode(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header, JWT_HEADER.as_bytes());
        // A JWT signed elsewhere with the same secret (here: by hand) is accepted as one.
        let payload = B64.encode(r#"{"sub":"svc","exp":99}"#);
        let signed = format!("{}.{payload}", B64.encode(JWT_HEADER));
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret"),
            signed.as_bytes(),
        );
        let jwt = format!("{signed}.{}", B64.encode(tag.as_ref()));
        assert_eq!(key.verified_payload(&jwt).unwrap()["sub"], "svc");
        // alg none (unsigned) is refused even with an empty signature part.
        let none = format!("{}.{payload}.", B64.encode(r#"{"alg":"none"}"#));
        assert_eq!(key.verified_payload(&none), Err(TokenError::Invalid));
    }

    #[test]
    fn wake_ids_are_fresh() {
        let a = wake_id().unwrap();
        assert_eq!((a.len(), &a[..2]), (26, "w_"));
        assert!(a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, wake_id().unwrap());
    }
}
