//! Placement: which cluster a new instance goes to when the request names none.
//!
//! Rule: among the registered clusters (of the requested region, when one is given), the one with the
//! highest rendezvous hash of `(cluster, project, instance name)`. Deterministic (a retried request lands
//! on the same cluster), spreads instances evenly, and adding a cluster moves only the instances that
//! would now hash highest to it — which affects only future placements, never existing instances.

use serde::{Deserialize, Serialize};

/// A Kubernetes cluster instances can be placed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// cluster name, a DNS-1123 label (it becomes a subject token)
    pub name: String,
    /// region, e.g. `eu-central`
    pub region: String,
}

/// FNV-1a, 64 bit, then MurmurHash3's finalizer for avalanche: stable across builds and platforms,
/// unlike `std`'s hasher, and even for names that differ in one character.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The cluster for a new instance, or `None` when no registered cluster matches.
pub fn place<'a>(
    clusters: &'a [Cluster],
    region: Option<&str>,
    project: &str,
    name: &str,
) -> Option<&'a Cluster> {
    clusters
        .iter()
        .filter(|c| region.is_none_or(|r| c.region == r))
        .max_by_key(|c| (fnv1a(&[&c.name, project, name]), c.name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusters() -> Vec<Cluster> {
        (0..4)
            .map(|i| Cluster { name: format!("c{i}"), region: if i < 2 { "eu" } else { "us" }.into() })
            .collect()
    }

    #[test]
    fn placement_is_deterministic_and_respects_the_region() {
        let all = clusters();
        for i in 0..50 {
            let name = format!("db-{i}");
            assert_eq!(place(&all, None, "p", &name), place(&all, None, "p", &name));
            assert_eq!(place(&all, Some("us"), "p", &name).unwrap().region, "us");
        }
        assert_eq!(place(&all, Some("mars"), "p", "db"), None);
    }

    #[test]
    fn placement_spreads_instances_over_clusters() {
        let all = clusters();
        let mut counts = [0; 4];
        for i in 0..4000 {
            let chosen = place(&all, None, "p", &format!("db-{i}")).unwrap();
            counts[all.iter().position(|c| c == chosen).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
    }
}
