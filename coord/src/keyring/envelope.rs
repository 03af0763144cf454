//! The envelope a sealed value is stored as, and how it is told from a plain value.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The `format` of every envelope: a stored value without it is not sealed.
pub const ENVELOPE_FORMAT: &str = "coord-sealed";

/// The envelope layout this code writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// A sealed value as stored: JSON, every field required, nothing else allowed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Envelope {
    pub format: String,
    pub version: u32,
    /// The id of the ring key it was sealed with.
    pub kid: String,
    /// The 24-byte nonce, base64.
    pub nonce: String,
    /// The ciphertext with its 16-byte tag, base64.
    pub ct: String,
}

impl Envelope {
    pub fn new(kid: &str, nonce: &[u8], ciphertext: &[u8]) -> Self {
        Envelope {
            format: ENVELOPE_FORMAT.to_owned(),
            version: ENVELOPE_VERSION,
            kid: kid.to_owned(),
            nonce: STANDARD.encode(nonce),
            ct: STANDARD.encode(ciphertext),
        }
    }

    /// The envelope `stored` holds, if it is one (of any version).
    pub fn parse(stored: &[u8]) -> Option<Envelope> {
        if !might_be_envelope(stored) {
            return None;
        }
        serde_json::from_slice::<Envelope>(stored)
            .ok()
            .filter(|envelope| envelope.format == ENVELOPE_FORMAT)
    }

    /// The associated data a value of `key` is sealed with under ring key `kid`: the format,
    /// its version, the key id and the full key path, so an envelope opens only under the key
    /// path (and the layout and key id) it was made for.
    pub fn associated_data(kid: &str, key: &str) -> Vec<u8> {
        format!("{ENVELOPE_FORMAT}:{ENVELOPE_VERSION}:{kid}:{key}").into_bytes()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings and an integer cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Whether `stored` is a sealed value (an envelope), as opposed to a plain one.
pub fn is_sealed(stored: &[u8]) -> bool {
    Envelope::parse(stored).is_some()
}

/// The id of the key `stored` was sealed with, if it is sealed: what `coordctl secrets status`
/// lists, read without any key.
pub fn key_id_of(stored: &[u8]) -> Option<String> {
    Envelope::parse(stored).map(|envelope| envelope.kid)
}

/// A cheap test that rules out almost every plain value without parsing it: an envelope is a
/// JSON object that names its format. Every read of every config value asks.
fn might_be_envelope(stored: &[u8]) -> bool {
    let object = stored
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    object
        && stored
            .windows(ENVELOPE_FORMAT.len())
            .any(|window| window == ENVELOPE_FORMAT.as_bytes())
}
