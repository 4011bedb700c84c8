//! JSON has no NaN or infinity: serde_json writes such an f64 as `null`. A run that diverges
//! records NaN losses and goodness, so the f64 fields of its logs and checkpoint headers read
//! `null` back as NaN instead of failing (which made a diverged run impossible to report or
//! resume).

use serde::{Deserialize, Deserializer};

/// For `#[serde(deserialize_with = ...)]` on an f64 field: `null` reads as NaN.
pub fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Value {
        #[serde(deserialize_with = "super::f64_or_nan")]
        x: f64,
    }

    #[test]
    fn nan_goes_out_as_null_and_comes_back_as_nan() {
        let text = serde_json::to_string(&Value { x: f64::NAN }).unwrap();
        assert_eq!(text, r#"{"x":null}"#);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert!(back.x.is_nan());
        let one: Value = serde_json::from_str(r#"{"x":1.5}"#).unwrap();
        assert_eq!(one.x, 1.5);
    }
}
