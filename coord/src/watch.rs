//! Resilient watch. (Being written.)
