//! Settings that come in layers: one struct is declared once (with [`layered!`]) and filled
//! twice, by clap from the flags and `VEIL_*` variables and by serde from the TOML file; the
//! upper layer is then laid over the lower one field by field ([`Overlay`]), so no setting is
//! merged by hand.
//!
//! A field is an `Option<T>` (set, or not) or a `Vec<T>` (a repeatable flag: a non-empty list
//! replaces the lower layer's list whole, it does not extend it).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A value of one layer that may be laid over the same value of a lower layer.
pub trait Overlay {
    /// `self` where it is set, else `lower`.
    fn over(self, lower: Self) -> Self;
}

impl<T> Overlay for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

impl<T> Overlay for Vec<T> {
    fn over(self, lower: Self) -> Self {
        if self.is_empty() {
            lower
        } else {
            self
        }
    }
}

/// Declares a struct of settings (every field an [`Overlay`]) exactly as written, with its
/// derives and attributes, and an `over(self, lower)` method that lays each field of `self`
/// over the same field of `lower`.
macro_rules! layered {
    (
        $(#[$($attr:tt)*])*
        pub struct $name:ident {
            $(
                $(#[$($field_attr:tt)*])*
                pub $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[$($attr)*])*
        pub struct $name {
            $(
                $(#[$($field_attr)*])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// Every setting of `self` that is set, the rest from `lower`.
            pub fn over(self, lower: Self) -> Self {
                Self {
                    $($field: $crate::layer::Overlay::over(self.$field, lower.$field),)*
                }
            }
        }
    };
}

/// Reads an optional duration written the way the flags take it (`250ms`, `10s`, `7d`).
pub fn humantime_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    layered! {
        #[derive(Debug, Default, PartialEq)]
        pub struct Two {
            pub one: Option<u32>,
            pub many: Vec<&'static str>,
        }
    }

    #[test]
    fn the_upper_layer_wins_where_it_is_set() {
        let upper = Two {
            one: Some(1),
            many: vec![],
        };
        let lower = Two {
            one: Some(2),
            many: vec!["a", "b"],
        };
        assert_eq!(
            upper.over(lower),
            Two {
                one: Some(1),
                many: vec!["a", "b"]
            }
        );
        let upper = Two {
            one: None,
            many: vec!["c"],
        };
        let lower = Two {
            one: Some(2),
            many: vec!["a", "b"],
        };
        assert_eq!(
            upper.over(lower),
            Two {
                one: Some(2),
                many: vec!["c"]
            }
        );
        assert_eq!(Two::default().over(Two::default()), Two::default());
    }
}
