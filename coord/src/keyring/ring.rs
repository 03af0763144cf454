//! The key ring: named 256-bit keys, newest first, that seal and open values.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::envelope::{ENVELOPE_VERSION, Envelope};
use crate::error::{Error, Result};

/// How long every key is: 256 bits.
pub const KEY_BYTES: usize = 32;

/// The configuration field key material is reported under (never the material itself).
const FIELD: &str = "secret_keys";

/// One key of a ring.
struct NamedKey {
    id: String,
    key: Zeroizing<[u8; KEY_BYTES]>,
}

/// Named 256-bit keys, newest first: [`seal`](Self::seal) uses the newest,
/// [`open`](Self::open) whichever key an envelope names. See the [module docs](super).
///
/// Cloning is cheap (the keys are shared). `Debug` shows the key ids, never the keys.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<[NamedKey]>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// A ring of `keys` (id, key bytes), newest first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for no keys, an id that is empty, over 64 characters or not
    /// of `A-Z a-z 0-9 . _ -`, or an id given twice.
    pub fn new(keys: impl IntoIterator<Item = (String, [u8; KEY_BYTES])>) -> Result<Self> {
        Self::of(keys.into_iter().map(|(id, key)| NamedKey {
            id,
            key: Zeroizing::new(key),
        }))
    }

    fn of(keys: impl IntoIterator<Item = NamedKey>) -> Result<Self> {
        let mut named: Vec<NamedKey> = Vec::new();
        for key in keys {
            check_id(&key.id)?;
            if named.iter().any(|k| k.id == key.id) {
                return Err(Error::invalid_argument(
                    FIELD,
                    format!("key id `{}` is given twice", key.id),
                ));
            }
            named.push(key);
        }
        if named.is_empty() {
            return Err(Error::invalid_argument(FIELD, "the key ring holds no key"));
        }
        Ok(KeyRing { keys: named.into() })
    }

    /// A ring read from text: one key per line, `ID BASE64` (32 bytes, standard base64),
    /// newest first; blank lines and lines starting with `#` are skipped, and `;` also ends a
    /// key (so one environment variable can hold several).
    ///
    /// ```
    /// let ring = coord::keyring::KeyRing::parse(
    ///     "# newest first\n2026-12 AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=; \
    ///      2026-06 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
    /// )?;
    /// assert_eq!(ring.newest(), "2026-12");
    /// assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["2026-12", "2026-06"]);
    /// # Ok::<(), coord::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the line (never its key) for a line that is not
    /// `ID BASE64`, a key that is not base64 or not 32 bytes, and as [`new`](Self::new).
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys = Vec::new();
        let entries = text
            .lines()
            .enumerate()
            .flat_map(|(n, line)| line.split(';').map(move |entry| (n + 1, entry.trim())));
        for (line, entry) in entries {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let mut words = entry.split_whitespace();
            let (Some(id), Some(encoded), None) = (words.next(), words.next(), words.next()) else {
                return Err(Error::invalid_argument(
                    FIELD,
                    format!("line {line}: expected `ID BASE64` (the key not shown)"),
                ));
            };
            // Checked before it is ever shown: a line written `BASE64 ID` would put the key
            // where the id belongs, and the id is named in every later message.
            check_id(id).map_err(|_| {
                Error::invalid_argument(
                    FIELD,
                    format!(
                        "line {line}: the key id must be 1 to 64 characters of A-Z a-z 0-9 . _ - \
                         and come first (`ID BASE64`; the line not shown)"
                    ),
                )
            })?;
            let bytes = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| {
                Error::invalid_argument(
                    FIELD,
                    format!("line {line}: key `{id}` is not base64 (the key not shown)"),
                )
            })?);
            if bytes.len() != KEY_BYTES {
                return Err(Error::invalid_argument(
                    FIELD,
                    format!(
                        "line {line}: key `{id}` is {} bytes, not {KEY_BYTES} (256 bits)",
                        bytes.len()
                    ),
                ));
            }
            let mut key = Zeroizing::new([0u8; KEY_BYTES]);
            key.copy_from_slice(&bytes);
            keys.push(NamedKey {
                id: id.to_owned(),
                key,
            });
        }
        Self::of(keys)
    }

    /// The key ids, newest first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// The id of the newest key, which [`seal`](Self::seal) uses.
    pub fn newest(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext` as the stored value of `key` (its full path), under the newest key
    /// and a fresh random nonce: the envelope's bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Secret`] if the cipher refuses (a value over its limit of 256 GiB).
    pub fn seal(&self, key: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let newest = &self.keys[0];
        let cipher = XChaCha20Poly1305::new(Key::from_slice(newest.key.as_slice()));
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Envelope::associated_data(&newest.id, key);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| secret_error(key, Some(&newest.id), "the cipher refused to seal it"))?;
        Ok(Envelope::new(&newest.id, nonce.as_slice(), &ciphertext).to_bytes())
    }

    /// Opens `stored`, the stored value of `key` (its full path): the plaintext, wiped from
    /// memory when dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Secret`] naming `key` and the key id: a value that is not an envelope (plain
    /// where a sealed value belongs), an envelope of a later version, a key id this ring does
    /// not hold, or an envelope that does not open (another key under that id, sealed for
    /// another key path, or changed since it was sealed).
    pub fn open(&self, key: &str, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        match self.open_if_sealed(key, stored)? {
            Some(plaintext) => Ok(plaintext),
            None => Err(secret_error(
                key,
                None,
                "the stored value is not sealed (a plain value where a secret belongs)",
            )),
        }
    }

    /// [`open`](Self::open) for a value that may be sealed or plain: `None` if `stored` is
    /// not an envelope (read it as it is), the plaintext if it is one that opens. Parses the
    /// envelope once: what every read of a config value goes through.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), for an envelope that does not open.
    pub fn open_if_sealed(&self, key: &str, stored: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(envelope) = Envelope::parse(stored) else {
            return Ok(None);
        };
        self.open_envelope(key, envelope).map(Some)
    }

    fn open_envelope(&self, key: &str, envelope: Envelope) -> Result<Zeroizing<Vec<u8>>> {
        let kid = Some(envelope.kid.as_str());
        if envelope.version != ENVELOPE_VERSION {
            return Err(secret_error(
                key,
                kid,
                &format!(
                    "envelope version {} is not one this coord reads ({ENVELOPE_VERSION})",
                    envelope.version
                ),
            ));
        }
        let Some(named) = self.keys.iter().find(|k| k.id == envelope.kid) else {
            return Err(secret_error(
                key,
                kid,
                &format!(
                    "no key `{}` in this process's key ring (it holds {:?})",
                    envelope.kid,
                    self.key_ids().collect::<Vec<_>>()
                ),
            ));
        };
        let damaged = || secret_error(key, kid, "the envelope is damaged (not base64)");
        let nonce = STANDARD.decode(&envelope.nonce).map_err(|_| damaged())?;
        let ciphertext = STANDARD.decode(&envelope.ct).map_err(|_| damaged())?;
        if nonce.len() != 24 {
            return Err(secret_error(
                key,
                kid,
                "the envelope's nonce is not 24 bytes",
            ));
        }
        let cipher = XChaCha20Poly1305::new(Key::from_slice(named.key.as_slice()));
        let aad = Envelope::associated_data(&named.id, key);
        cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                secret_error(
                    key,
                    kid,
                    "it does not open: another key under this id, sealed for another key, or \
                     changed since it was sealed",
                )
            })
    }
}

fn secret_error(key: &str, key_id: Option<&str>, reason: &str) -> Error {
    Error::Secret {
        key: key.to_owned(),
        key_id: key_id.map(str::to_owned),
        reason: reason.to_owned(),
    }
}

fn check_id(id: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 64 || !id.chars().all(allowed) {
        return Err(Error::invalid_argument(
            FIELD,
            format!("key id `{id}` must be 1 to 64 characters of A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}
