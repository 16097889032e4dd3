//! Serde adapters for the shapes Go's `encoding/json` produces: `null` where a
//! slice or map is empty, and sets written as objects of empty objects
//! (`"ExposedPorts": {"80/tcp": {}}`).

use std::collections::BTreeSet;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};

/// Deserialises `null` (or a missing field, with `#[serde(default)]`) as the
/// type's default: Go writes `null` for nil slices and maps.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A set of strings as a JSON object whose values are `{}` (Go's
/// `map[string]struct{}`); values are ignored when reading.
pub(crate) mod set_as_object {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        set: &BTreeSet<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Empty {}
        let mut m = s.serialize_map(Some(set.len()))?;
        for k in set {
            m.serialize_entry(k, &Empty {})?;
        }
        m.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeSet<String>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BTreeSet<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object (or null)")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(BTreeSet::new())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(BTreeSet::new())
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                d.deserialize_any(V)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeSet::new();
                while let Some((k, IgnoredAny)) = a.next_entry::<String, IgnoredAny>()? {
                    out.insert(k);
                }
                Ok(out)
            }
        }
        d.deserialize_option(V)
    }
}
