//! Integration tests of coord live in `tests/`; this library holds what several of them share.

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
}
