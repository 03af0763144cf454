//! Conversions between coord's request and response types and etcd-client's.

use etcd_client::{DeleteOptions, GetOptions, PutOptions};

use crate::store::*;

pub(super) fn get_options(range: &KeyRange, options: RangeOptions) -> GetOptions {
    let mut get = GetOptions::new();
    // etcd-client turns an empty prefix into etcd's "every key" range ("\0" to "\0").
    if matches!(range, KeyRange::Prefix(_)) {
        get = get.with_prefix();
    }
    if options.revision > 0 {
        get = get.with_revision(options.revision);
    }
    if options.keys_only {
        get = get.with_keys_only();
    }
    if options.limit > 0 {
        get = get.with_limit(options.limit);
    }
    if options.min_mod_revision > 0 {
        get = get.with_min_mod_revision(options.min_mod_revision);
    }
    if options.count_only {
        get = get.with_count_only();
    }
    get
}

pub(super) fn delete_options(range: &KeyRange) -> DeleteOptions {
    let options = DeleteOptions::new().with_prev_key();
    match range {
        KeyRange::Prefix(_) => options.with_prefix(),
        KeyRange::Key(_) => options,
    }
}

pub(super) fn to_txn(txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<etcd_client::Compare> = txn.compares.iter().map(to_compare).collect();
    let success: Vec<etcd_client::TxnOp> = txn.success.iter().map(to_txn_op).collect();
    let failure: Vec<etcd_client::TxnOp> = txn.failure.iter().map(to_txn_op).collect();
    etcd_client::Txn::new()
        .when(compares)
        .and_then(success)
        .or_else(failure)
}

fn to_compare(compare: &Compare) -> etcd_client::Compare {
    use etcd_client::{Compare as C, CompareOp as Op};
    let op = match compare.op {
        CompareOp::Equal => Op::Equal,
        CompareOp::NotEqual => Op::NotEqual,
        CompareOp::Greater => Op::Greater,
        CompareOp::Less => Op::Less,
    };
    let key = compare.key.clone();
    let single = match &compare.target {
        CompareTarget::Value(value) => C::value(key, op, value.clone()),
        CompareTarget::Version(n) => C::version(key, op, *n),
        CompareTarget::CreateRevision(n) => C::create_revision(key, op, *n),
        CompareTarget::ModRevision(n) => C::mod_revision(key, op, *n),
        CompareTarget::Lease(n) => C::lease(key, op, *n),
    };
    if compare.prefix {
        single.with_prefix()
    } else {
        single
    }
}

fn to_txn_op(op: &TxnOp) -> etcd_client::TxnOp {
    use etcd_client::TxnOp as Op;
    match op {
        // No previous values in a transaction: see `TxnOpResponse`.
        TxnOp::Put { key, value, lease } => Op::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(*lease)),
        ),
        TxnOp::Delete(range) => {
            let options = match range {
                KeyRange::Prefix(_) => DeleteOptions::new().with_prefix(),
                KeyRange::Key(_) => DeleteOptions::new(),
            };
            Op::delete(range.as_str(), Some(options))
        }
        TxnOp::Get(range, options) => Op::get(range.as_str(), Some(get_options(range, *options))),
    }
}

pub(super) fn from_txn(response: etcd_client::TxnResponse) -> TxnResponse {
    use etcd_client::TxnOpResponse as R;
    let responses = response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            R::Put(put) => Some(TxnOpResponse::Put(from_put(put))),
            R::Delete(delete) => Some(TxnOpResponse::Delete(from_delete(delete))),
            R::Get(get) => Some(TxnOpResponse::Get(from_get(get))),
            // coord sends no nested transactions.
            R::Txn(_) => None,
        })
        .collect();
    TxnResponse {
        succeeded: response.succeeded(),
        revision: header_revision(response.header()),
        responses,
    }
}

pub(super) fn from_get(mut response: etcd_client::GetResponse) -> GetResponse {
    GetResponse {
        revision: header_revision(response.header()),
        count: response.count(),
        kvs: response.take_kvs().into_iter().map(from_kv).collect(),
    }
}

pub(super) fn from_put(mut response: etcd_client::PutResponse) -> PutResponse {
    PutResponse {
        revision: header_revision(response.header()),
        prev_kv: response.take_prev_key().map(from_kv),
    }
}

pub(super) fn from_delete(mut response: etcd_client::DeleteResponse) -> DeleteResponse {
    DeleteResponse {
        revision: header_revision(response.header()),
        deleted: response.deleted(),
        prev_kvs: response.take_prev_kvs().into_iter().map(from_kv).collect(),
    }
}

pub(super) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

fn from_kv(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, version, lease) = (
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    );
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: match String::from_utf8(key) {
            Ok(key) => key,
            Err(e) => lossy(e.as_bytes()),
        },
        value,
        create_revision,
        mod_revision,
        version,
        lease,
    }
}

pub(super) fn from_kv_ref(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: lossy(kv.key()),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

/// coord writes UTF-8 keys only; a foreign key that is not UTF-8 is shown lossily.
pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_prefix_ranges_over_every_key() {
        let request: etcd_client::TxnOp =
            to_txn_op(&TxnOp::Get(KeyRange::prefix(""), RangeOptions::default()));
        let debug = format!("{request:?}");
        assert!(debug.contains("key: [0], range_end: [0]"), "{debug}");
    }
}
