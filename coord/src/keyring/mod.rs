//! Secret values sealed at rest: a key ring of named 256-bit keys and the envelope a secret's
//! stored value becomes.
//!
//! What it promises:
//! - **A sealed value shows nothing of the secret.** [`KeyRing::seal`] encrypts with
//!   XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`: an AEAD, so a changed byte fails
//!   to open rather than decrypting to something else) under a fresh random 192-bit nonce, and
//!   stores a small JSON envelope: its format and version, the id of the key, the nonce and the
//!   ciphertext, base64. Two seals of one value differ.
//! - **A sealed value opens only where it was sealed.** The full key path (`/config/db/password`)
//!   and the key id are the associated data: an envelope copied to another key fails to open
//!   there, as does one whose key id, nonce or ciphertext was changed.
//! - **Rotation without a flag day.** A ring holds several keys, newest first: it seals with the
//!   newest and opens with whichever key an envelope names, so processes given the new key
//!   first keep reading values sealed under the old one until every value is sealed anew.
//! - **Failures name the key and the key id, never the value**: [`Error::Secret`] says which
//!   stored key could not be opened, under which key id, and why (no such key in this ring, the
//!   wrong key under that id, a damaged envelope, a plain value where a sealed one belongs).
//! - **Keys come from a [`KeyProvider`].** [`KeyFile`] reads them from a file that only its
//!   owner may read, [`KeyEnv`] from an environment variable; a KMS can implement the trait.
//!   Key bytes are wiped from memory when the ring is dropped.
//!
//! ```
//! use coord::keyring::KeyRing;
//!
//! let ring = KeyRing::parse("k2 AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n\
//!                            k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")?;
//! let stored = ring.seal("/config/db/password", b"hunter2")?;
//! assert!(!String::from_utf8_lossy(&stored).contains("hunter2"));
//! assert_eq!(ring.open("/config/db/password", &stored)?.as_slice(), b"hunter2");
//! // Sealed for one key, it opens nowhere else.
//! assert!(ring.open("/config/db/user", &stored).is_err());
//! # Ok::<(), coord::Error>(())
//! ```
//!
//! [`Error::Secret`]: crate::Error::Secret

mod envelope;
mod provider;
mod ring;

pub use envelope::{ENVELOPE_FORMAT, ENVELOPE_VERSION, is_sealed, key_id_of};
pub use provider::{KeyEnv, KeyFile, KeyProvider};
pub use ring::{KEY_BYTES, KeyRing};

#[cfg(test)]
mod tests;
