//! Identifiers. apiary owns its ids (stable across reboots, when the kernel hands out new ones);
//! the kernel's ids are kept beside them and shown too.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(v).map($name)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().parse::<i64>() {
                    Ok(v) if v > 0 => Ok($name(v)),
                    _ => Err(format!(
                        "invalid {} id {s:?}: expected a positive integer",
                        $what
                    )),
                }
            }
        }
    };
}

id_type!(ProgramId, "program");
id_type!(LinkId, "link");
id_type!(MapId, "map");
id_type!(ChainId, "chain");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_reject() {
        assert_eq!("42".parse::<ProgramId>().unwrap(), ProgramId(42));
        assert!("0".parse::<ProgramId>().is_err());
        assert!("-3".parse::<LinkId>().is_err());
        let e = "abc".parse::<LinkId>().unwrap_err();
        assert!(e.contains("invalid link id"), "{e}");
    }
}
