//! Whether what the cluster holds already is what the agent renders: the comparison that keeps a
//! converged cluster free of writes, with Kubernetes quantities compared by value.

use serde_json::Value;

/// Whether `actual` already holds everything in `desired` (server-added fields are ignored; the
/// generation label is ignored, so unaffected objects are not rewritten on every change).
///
/// A real API server returns quantities in canonical form (`2000m` comes back as `2`, `8192Mi` as
/// `8Gi`: k8s.io/apimachinery `pkg/api/resource/quantity.go`, `Quantity.String` writes
/// `CanonicalizeBytes`), so quantity fields are compared by value, not by spelling; see
/// [`quantities_equal`].
///
/// `apiVersion` and `kind` name the object rather than describe it, and a real API server leaves them
/// out of the items of a built-in type's list, which is how a watch cache starts.
pub fn is_applied(desired: &Value, actual: &Value) -> bool {
    subset(desired, actual, "", &[GENERATION_PATH, "/apiVersion", "/kind"])
}

/// JSON path of [`super::GENERATION_LABEL`] (the label key holds a `/`, which the path keeps as it is).
const GENERATION_PATH: &str = "/metadata/labels/cp.example.com/generation";

/// The first field of `desired` that `actual` does not hold as [`is_applied`] compares them: its JSON
/// pointer, the desired value and the one found (null when absent).
pub fn first_difference(desired: &Value, actual: &Value) -> Option<(String, Value, Value)> {
    difference(desired, actual, "", &[GENERATION_PATH, "/apiVersion", "/kind"])
}

fn difference(
    desired: &Value,
    actual: &Value,
    path: &str,
    ignored: &[&str],
) -> Option<(String, Value, Value)> {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d.iter().find_map(|(k, v)| {
            let path = format!("{path}/{k}");
            if ignored.contains(&path.as_str()) {
                return None;
            }
            match a.get(k) {
                Some(av) => difference(v, av, &path, ignored),
                None => Some((path, v.clone(), Value::Null)),
            }
        }),
        _ if subset(desired, actual, path, ignored) => None,
        _ => Some((path.to_owned(), desired.clone(), actual.clone())),
    }
}

fn subset(desired: &Value, actual: &Value, path: &str, ignored: &[&str]) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d.iter().all(|(k, v)| {
            let path = format!("{path}/{k}");
            ignored.contains(&path.as_str()) || a.get(k).is_some_and(|av| subset(v, av, &path, ignored))
        }),
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(dv, av)| subset(dv, av, path, ignored))
        }
        (Value::String(d), Value::String(a)) if is_quantity_path(path) => quantities_equal(d, a),
        (d, a) => d == a,
    }
}

/// Fields that hold `resource.Quantity` values in what the agent renders: container `resources`
/// (`requests`/`limits`), claim requests, and CloudNativePG's `storage.size`.
fn is_quantity_path(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let (_, parent) = (parts.next(), parts.next());
    matches!(parent, Some("requests" | "limits")) || path.ends_with("/storage/size")
}

/// Whether two Kubernetes quantities denote the same amount, exactly (`2000m` = `2`, `8192Mi` = `8Gi`,
/// `1.5Gi` = `1536Mi`, `1e3` = `1k`). Unparsable strings are equal only when identical.
pub fn quantities_equal(a: &str, b: &str) -> bool {
    match (Quantity::parse(a), Quantity::parse(b)) {
        (Some(a), Some(b)) => a.same_value(&b),
        _ => a == b,
    }
}

/// A quantity as an exact fraction: `mantissa × 2^binary × 10^decimal`.
#[derive(Debug, Clone, Copy)]
struct Quantity {
    mantissa: i128,
    binary: u32,
    decimal: i32,
}

impl Quantity {
    /// Parses the serialisation k8s.io/apimachinery `resource.ParseQuantity` accepts: a signed decimal
    /// number and a suffix, binary (`Ki`..`Ei`), decimal (`n`, `u`, `m`, `k`, `M`..`E`) or an exponent
    /// (`e3`, `E-2`).
    fn parse(text: &str) -> Option<Self> {
        let end = text
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
            .map_or(text.len(), |(i, _)| i);
        let (number, suffix) = text.split_at(end);
        let negative = number.starts_with('-');
        let number = number.trim_start_matches(['+', '-']);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let digits = format!("{whole}{fraction}");
        let mut mantissa: i128 = digits.parse().ok()?;
        if negative {
            mantissa = -mantissa;
        }
        let mut decimal = -i32::try_from(fraction.len()).ok()?;
        let mut binary = 0;
        match suffix {
            "" => {}
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                binary = 10 * (1 + "KMGTPE".find(&suffix[..1])? as u32);
            }
            "n" => decimal -= 9,
            "u" => decimal -= 6,
            "m" => decimal -= 3,
            "k" => decimal += 3,
            "M" => decimal += 6,
            "G" => decimal += 9,
            "T" => decimal += 12,
            "P" => decimal += 15,
            "E" => decimal += 18,
            exponent => decimal += exponent.strip_prefix(['e', 'E'])?.parse::<i32>().ok()?,
        }
        Some(Self { mantissa, binary, decimal })
    }

    /// Exact comparison by cross-multiplying (`None` on overflow, then compared as unequal).
    fn same_value(&self, other: &Self) -> bool {
        let scale = |q: &Self, binary: u32, decimal: i32| -> Option<i128> {
            let shifted = q.mantissa.checked_mul(1i128.checked_shl(q.binary.checked_sub(binary)?)?)?;
            shifted.checked_mul(10i128.checked_pow(u32::try_from(q.decimal - decimal).ok()?)?)
        };
        let binary = self.binary.min(other.binary);
        let decimal = self.decimal.min(other.decimal);
        match (scale(self, binary, decimal), scale(other, binary, decimal)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_difference_names_the_field_and_both_values_and_ignores_equal_quantities() {
        let desired =
            json!({"spec": {"replicas": 1, "template": {"resources": {"limits": {"memory": "8192Mi"}}}}});
        let actual =
            json!({"spec": {"replicas": 5, "template": {"resources": {"limits": {"memory": "8Gi"}}}}});
        assert_eq!(first_difference(&desired, &actual), Some(("/spec/replicas".into(), json!(1), json!(5))));
        let same_amount =
            json!({"spec": {"replicas": 1, "template": {"resources": {"limits": {"memory": "8Gi"}}}}});
        assert_eq!(first_difference(&desired, &same_amount), None);
        assert!(is_applied(&desired, &same_amount));
        let missing = json!({"spec": {"template": {"resources": {"limits": {"memory": "8Gi"}}}}});
        assert_eq!(
            first_difference(&desired, &missing),
            Some(("/spec/replicas".into(), json!(1), json!(null)))
        );
    }
}
