//! A lease kept alive in the background. (Being written.)
