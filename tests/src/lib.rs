//! Integration tests of coord live in `tests/`; this library holds what several of them share,
//! and the [`nemesis`] fault run.

pub mod nemesis;

pub mod measure {
    //! What the benchmarks measure with.

    /// The value at `p` (0.0-1.0) of `sorted`, nearest rank.
    pub fn percentile(sorted: &[f64], p: f64) -> f64 {
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index]
    }

    /// Resident memory of this process (Linux; 0 where `/proc` says nothing).
    pub fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
}

pub mod fixtures {
    //! Config structs the `Live` tests bind, the same on every backend.

    use coord::CoordConfig;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct RateLimit {
        pub per_second: u32,
        pub burst: u32,
    }

    fn positive_timeout(c: &Checkout) -> Result<(), String> {
        if c.timeout_secs == 0 {
            return Err("timeout_secs must be positive".into());
        }
        Ok(())
    }

    /// A default, a renamed required key and a validate function.
    #[derive(CoordConfig, Debug, Clone, PartialEq)]
    #[coord(prefix = "/config/checkout", validate = "positive_timeout")]
    pub struct Checkout {
        #[coord(default = 30)]
        pub timeout_secs: u64,
        #[coord(key = "rate-limit")]
        pub rate_limit: RateLimit,
    }

    /// Two keys that writers keep equal; a reader that sees them differ saw a torn write.
    #[derive(CoordConfig, Debug, Clone, PartialEq)]
    #[coord(prefix = "/config/pair")]
    pub struct Pair {
        pub a: u64,
        pub b: u64,
    }

    pub mod full {
        //! Every attribute of `#[derive(CoordConfig)]` at once: defaults (expression and
        //! `Default`), a renamed key, secrets, nested structs two levels deep, validate functions.

        use coord::config::Secret;
        use coord::CoordConfig;

        pub use super::RateLimit;

        fn positive_timeout(c: &Checkout) -> Result<(), String> {
            if c.timeout_secs == 0 {
                return Err("timeout_secs must be positive".into());
            }
            Ok(())
        }

        /// Every attribute at once.
        #[derive(CoordConfig, Debug, Clone, PartialEq)]
        #[coord(prefix = "/config/checkout", validate = "positive_timeout")]
        pub struct Checkout {
            /// Seconds before a payment attempt is abandoned.
            #[coord(default = 30)]
            pub timeout_secs: u64,
            /// Requests allowed per client.
            #[coord(key = "rate-limit")]
            pub rate_limit: RateLimit,
            /// Feature flags turned on.
            #[coord(default)]
            pub flags: Vec<String>,
            #[coord(default = "eu-west".to_string())]
            pub region: String,
            /// The payment provider's API key.
            #[coord(secret)]
            pub api_key: Secret<String>,
            #[coord(nested)]
            pub db: Db,
        }

        fn valid_pool(db: &Db) -> Result<(), String> {
            if db.pool_size == 0 {
                return Err("pool_size must be at least 1".into());
            }
            Ok(())
        }

        #[derive(CoordConfig, Debug, Clone, PartialEq)]
        #[coord(validate = "valid_pool")]
        pub struct Db {
            /// Database host name.
            pub host: String,
            #[coord(default = 4)]
            pub pool_size: u32,
            #[coord(nested, key = "tls-options")]
            pub tls: Tls,
        }

        #[derive(CoordConfig, Debug, Clone, PartialEq)]
        pub struct Tls {
            #[coord(default)]
            pub enabled: bool,
            #[coord(secret, default = Secret::new("changeit".to_string()))]
            pub password: Secret<String>,
        }

        impl Checkout {
            /// A value with every field away from its default.
            pub fn sample() -> Checkout {
                Checkout {
                    timeout_secs: 45,
                    rate_limit: RateLimit {
                        per_second: 100,
                        burst: 20,
                    },
                    flags: vec!["new-cart".into()],
                    region: "us-east".into(),
                    api_key: Secret::new("sk_live_123".into()),
                    db: Db {
                        host: "db.internal".into(),
                        pool_size: 8,
                        tls: Tls {
                            enabled: true,
                            password: Secret::new("s3cret".into()),
                        },
                    },
                }
            }
        }
    }
}
