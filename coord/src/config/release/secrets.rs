//! A prefix's secrets as stored: which key id each is sealed under (or that it is plain), and
//! the release that seals them all under the newest key (a rotation, or the migration of
//! plain secrets).
//!
//! Which keys are secrets is what the published schema says ([`PublishedSchema::is_secret`]),
//! so this works for any prefix a service published, whatever process runs it; the
//! plaintexts exist only in this process, between the read and the write of the release.
//!
//! [`PublishedSchema::is_secret`]: crate::config::PublishedSchema::is_secret

use std::collections::BTreeMap;

use super::ReleaseBuilder;
use crate::config::ConfigCenter;
use crate::config::schema::decode_stored;
use crate::error::{Error, Result};
use crate::keyring::{is_sealed, key_id_of};
use crate::store::{KeyRange, RangeOptions};

/// One secret of a prefix as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredSecret {
    /// The key, relative to the prefix.
    pub key: String,
    /// The id of the ring key it is sealed under; `None` if it is stored plain.
    pub key_id: Option<String>,
}

impl ConfigCenter {
    /// Every stored key of `prefix` that its published schema marks secret, with the key id
    /// it is sealed under (`None`: plain), in key order. Reads no plaintext: it needs no key.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the schema key if no schema is published for `prefix` (so
    /// nothing says which keys are secrets); store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn stored_secrets(&self, prefix: &str) -> Result<Vec<StoredSecret>> {
        let (schema, kvs) = self.secrets_of(prefix).await?;
        let under = format!("{}/", prefix.trim_end_matches('/'));
        Ok(kvs
            .into_iter()
            .filter_map(|(key, value, _)| {
                let relative = key.strip_prefix(&under)?.to_owned();
                schema.is_secret(&relative).then(|| StoredSecret {
                    key: relative,
                    key_id: key_id_of(&value),
                })
            })
            .collect())
    }

    /// The release that seals every secret of `prefix` (as its published schema marks them)
    /// under the newest key of this `Coord`'s ring: secrets sealed under an older key are
    /// opened and sealed anew (a rotation), plain ones are sealed (a migration), and the ones
    /// already under the newest key are left as they are. `None` if there is nothing to do.
    /// Commit it like any release: it is recorded, and a rollback restores the envelopes from
    /// before it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use coord::keyring::KeyRing;
    ///
    /// #[derive(coord::CoordConfig, Debug, Clone)]
    /// #[coord(prefix = "/config/db")]
    /// struct Db {
    ///     #[coord(secret)]
    ///     password: coord::Secret<String>,
    /// }
    ///
    /// let coord = coord::Coord::in_memory();
    /// let config = coord.config();
    /// config.publish_schema::<Db>().await?;
    /// config.publish(&Db { password: coord::Secret::new("hunter2".into()) }).await?; // plain
    /// coord.set_key_ring(KeyRing::parse("k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")?);
    /// let release = config.seal_secrets("/config/db").await?.expect("one plain secret");
    /// release.message("seal secrets").commit().await?;
    /// let stored = config.stored_secrets("/config/db").await?;
    /// assert_eq!(stored[0].key_id.as_deref(), Some("k1"));
    /// assert!(config.seal_secrets("/config/db").await?.is_none(), "nothing left to seal");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming `secret_keys` if this `Coord` has no key ring;
    /// [`Error::NotFound`] if no schema is published for `prefix`; [`Error::Secret`] for a
    /// secret sealed under a key this ring does not hold (nothing is written); store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads; the release is written by its `commit`.
    pub async fn seal_secrets(&self, prefix: &str) -> Result<Option<ReleaseBuilder>> {
        let Some(ring) = self.keys.load_full() else {
            return Err(Error::invalid_argument(
                "secret_keys",
                "this process has no key ring to seal with",
            ));
        };
        let prefix = prefix.trim_end_matches('/');
        let (schema, kvs) = self.secrets_of(prefix).await?;
        let under = format!("{prefix}/");
        let mut values = BTreeMap::new();
        let mut versions = BTreeMap::new();
        for (key, value, version) in kvs {
            let Some(relative) = key.strip_prefix(&under) else {
                continue;
            };
            let current = is_sealed(&value) && key_id_of(&value).as_deref() == Some(ring.newest());
            if !schema.is_secret(relative) || current {
                continue;
            }
            let json: serde_json::Value = decode_stored(Some(&ring), &key, &value)?;
            values.insert(relative.to_owned(), json);
            versions.insert(relative.to_owned(), version);
        }
        if values.is_empty() {
            return Ok(None);
        }
        // A secret released between this read and the commit must not be overwritten with
        // the value read here: each key must still be at the version read.
        let mut builder = self.release_raw(prefix, values);
        for (relative, version) in versions {
            builder = builder.expect_version(relative, version);
        }
        Ok(Some(builder))
    }

    /// The release records of `prefix` (by seq) that hold a secret stored plain: made before
    /// its secrets were sealed, they keep the plaintext of that time, as etcd's older revisions
    /// do until compacted. Sealing the current values does not change them.
    ///
    /// # Errors
    ///
    /// As [`stored_secrets`](Self::stored_secrets).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn plain_secrets_in_history(&self, prefix: &str) -> Result<Vec<u64>> {
        let prefix = prefix.trim_end_matches('/');
        let (schema, _) = self.secrets_of(prefix).await?;
        let revision = self.store.status().await?.revision;
        let records = super::state::records_since(self, prefix, 0, revision).await?;
        Ok(records
            .iter()
            .filter(|(record, _)| record.holds_plain_secret(|key| schema.is_secret(key)))
            .map(|(record, _)| record.seq)
            .collect())
    }

    /// The published schema of `prefix` and its stored keys and values.
    async fn secrets_of(
        &self,
        prefix: &str,
    ) -> Result<(crate::config::PublishedSchema, Vec<(String, Vec<u8>, i64)>)> {
        let prefix = prefix.trim_end_matches('/');
        let schema = self.schema(prefix).await?.ok_or_else(|| Error::NotFound {
            key: crate::config::PublishedSchema::key(prefix),
        })?;
        let response = self
            .store
            .range(
                &KeyRange::prefix(format!("{prefix}/")),
                RangeOptions::default(),
            )
            .await?;
        let kvs = response
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect();
        Ok((schema, kvs))
    }
}
