//! Real etcd servers for tests. (Being written.)
