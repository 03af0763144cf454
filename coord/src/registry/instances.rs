//! [`Instances`], the shared view of a service's instances that discovery hands out.

use std::sync::Arc;

use super::service::ServiceInfo;

/// The instances of one service at one moment, ordered by id: what
/// [`Registry::discover`](super::Registry::discover) and
/// [`ServiceCache::instances`](super::ServiceCache::instances) return.
///
/// A cheap, immutable view: cloning it, or getting it again from a watched cache that has not
/// changed, copies no instance (the instances themselves are shared `Arc`s). Read it like a
/// slice: [`len`](Self::len), [`iter`](Self::iter), [`get`](Self::get) or `instances[i]`; it
/// never changes after it is returned, so a later registration shows only in a later call.
/// [`to_vec`](Self::to_vec) makes owned copies when you need to keep or change them.
///
/// # Examples
///
/// ```
/// use coord::registry::{Instances, ServiceInfo};
/// let instances: Instances = vec![
///     ServiceInfo::new("api", "b", "10.0.0.2:80"),
///     ServiceInfo::new("api", "a", "10.0.0.1:80"),
/// ]
/// .into_iter()
/// .collect();
/// assert_eq!(instances.len(), 2);
/// assert_eq!(instances[0].id, "a"); // ordered by id
/// let addresses: Vec<&str> = instances.iter().map(|i| i.address.as_str()).collect();
/// assert_eq!(addresses, ["10.0.0.1:80", "10.0.0.2:80"]);
/// assert_eq!(instances.get(2), None);
/// ```
#[derive(Clone, Default)]
pub struct Instances {
    /// Sorted by id, ids unique.
    items: Arc<[Arc<ServiceInfo>]>,
}

impl Instances {
    /// A view of `items`, which must already be in id order with unique ids (as the entries of
    /// an id-keyed map are).
    pub(crate) fn from_sorted(items: impl IntoIterator<Item = Arc<ServiceInfo>>) -> Self {
        Instances {
            items: items.into_iter().collect(),
        }
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if the service has no instances.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The instances in id order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.items.iter(),
        }
    }

    /// The `index`-th instance in id order, if there are that many.
    pub fn get(&self, index: usize) -> Option<&ServiceInfo> {
        self.items.get(index).map(|info| &**info)
    }

    /// The instance with this id, if there is one (a binary search: they are in id order).
    pub fn find(&self, id: &str) -> Option<&ServiceInfo> {
        self.items
            .binary_search_by(|info| info.id.as_str().cmp(id))
            .ok()
            .map(|index| &*self.items[index])
    }

    /// The shared instances themselves, in id order: clone an `Arc` to keep one instance
    /// without copying it.
    pub fn as_slice(&self) -> &[Arc<ServiceInfo>] {
        &self.items
    }

    /// Owned copies of the instances, in id order.
    pub fn to_vec(&self) -> Vec<ServiceInfo> {
        self.iter().cloned().collect()
    }
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Instances {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.items, &other.items) || self.items == other.items
    }
}

impl Eq for Instances {}

impl std::ops::Index<usize> for Instances {
    type Output = ServiceInfo;

    /// # Panics
    ///
    /// If `index` is out of bounds, as a slice does.
    fn index(&self, index: usize) -> &ServiceInfo {
        &self.items[index]
    }
}

/// Sorts by id; of several instances with one id, the last one wins.
impl FromIterator<ServiceInfo> for Instances {
    fn from_iter<I: IntoIterator<Item = ServiceInfo>>(infos: I) -> Self {
        let mut infos: Vec<ServiceInfo> = infos.into_iter().collect();
        // Stable, so among equal ids the last one stays last; dedup keeps the first of a run,
        // hence the reverse around it.
        infos.reverse();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        infos.dedup_by(|a, b| a.id == b.id);
        Instances::from_sorted(infos.into_iter().map(Arc::new))
    }
}

impl From<Instances> for Vec<ServiceInfo> {
    fn from(instances: Instances) -> Self {
        instances.to_vec()
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = &'a ServiceInfo;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Yields the shared instances (`Arc<ServiceInfo>`, which reads like a `ServiceInfo`) without
/// copying them.
impl IntoIterator for Instances {
    type Item = Arc<ServiceInfo>;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter {
            items: self.items,
            next: 0,
        }
    }
}

/// Iterator over `&ServiceInfo` in id order, from [`Instances::iter`].
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    inner: std::slice::Iter<'a, Arc<ServiceInfo>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a ServiceInfo;

    fn next(&mut self) -> Option<&'a ServiceInfo> {
        self.inner.next().map(|info| &**info)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|info| &**info)
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl std::iter::FusedIterator for Iter<'_> {}

/// Owning iterator over the shared instances in id order, from `Instances::into_iter`.
#[derive(Clone, Debug)]
pub struct IntoIter {
    items: Arc<[Arc<ServiceInfo>]>,
    next: usize,
}

impl Iterator for IntoIter {
    type Item = Arc<ServiceInfo>;

    fn next(&mut self) -> Option<Arc<ServiceInfo>> {
        let info = self.items.get(self.next)?;
        self.next += 1;
        Some(Arc::clone(info))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.items.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for IntoIter {}

impl std::iter::FusedIterator for IntoIter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collecting_sorts_by_id_and_keeps_the_last_of_an_id() {
        let instances: Instances = [
            ServiceInfo::new("api", "b", "h:1"),
            ServiceInfo::new("api", "a", "h:1"),
            ServiceInfo::new("api", "b", "h:2"),
        ]
        .into_iter()
        .collect();
        let seen: Vec<(&str, &str)> = instances
            .iter()
            .map(|i| (i.id.as_str(), i.address.as_str()))
            .collect();
        assert_eq!(seen, [("a", "h:1"), ("b", "h:2")]);
        assert_eq!(instances.find("b").map(|i| i.address.as_str()), Some("h:2"));
        assert!(instances.find("c").is_none());
        let owned: Vec<String> = instances
            .clone()
            .into_iter()
            .map(|i| i.id.clone())
            .collect();
        assert_eq!(owned, ["a", "b"]);
        assert_eq!(instances.to_vec().len(), 2);
    }
}
