//! `Hook`: where an XDP or TC chain runs — kind, interface, network namespace, direction, and
//! the XDP mode its link uses. One value from the front door (an attach spec, a `get chain`
//! request) through the dispatcher's attach to the store's `chains` row. With feature `sql`, the
//! enums it holds are stored as their names through rusqlite's `ToSql`/`FromSql`.

use crate::attach::{dir_name, TcDirection, XdpMode};
use crate::chain::ChainKind;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub kind: ChainKind,
    pub iface: String,
    /// `None`: the host's network namespace.
    pub netns: Option<PathBuf>,
    /// TC only.
    pub direction: Option<TcDirection>,
    /// How an XDP chain's link attaches (`Auto` for TC). Not part of where the hook is: a chain
    /// is found by the other fields, and its mode is checked against a joiner's.
    pub mode: XdpMode,
}

/// What an attach spec that joins a chain asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainJoin<'a> {
    pub hook: Hook,
    pub priority: u32,
    /// Proceed-on names as given (empty: the kind's default).
    pub proceed_on: &'a [String],
}

impl Hook {
    /// Whether both name the same hook (everything but the mode).
    pub fn same_place(&self, other: &Hook) -> bool {
        self.kind == other.kind
            && self.iface == other.iface
            && self.netns == other.netns
            && self.direction == other.direction
    }
}

impl ChainJoin<'_> {
    /// The checks every chain member's options share: the priority's range and the verdict
    /// names.
    pub fn validate(&self) -> Result<(), String> {
        crate::chain::Priority::new(self.priority as i64).map_err(|e| e.to_string())?;
        if !self.proceed_on.is_empty() {
            crate::chain::ProceedOn::from_names(self.hook.kind, self.proceed_on)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl fmt::Display for Hook {
    /// `xdp chain on eth0`, `tc chain on eth0 ingress`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} chain on {}", self.kind, self.iface)?;
        if let Some(d) = self.direction {
            write!(f, " {}", dir_name(d))?;
        }
        Ok(())
    }
}

#[cfg(feature = "sql")]
mod sql {
    //! Each enum is stored as the name its name function gives and read back by that name; a name the
    //! store does not know is a conversion error naming it.
    use super::*;
    use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

    macro_rules! by_name {
        ($ty:ty, $name:expr, [$($v:expr),+]) => {
            impl ToSql for $ty {
                fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                    let name: fn($ty) -> &'static str = $name;
                    Ok(ToSqlOutput::Borrowed(ValueRef::Text(name(*self).as_bytes())))
                }
            }
            impl FromSql for $ty {
                fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                    let name: fn($ty) -> &'static str = $name;
                    let s = v.as_str()?;
                    [$($v),+]
                        .into_iter()
                        .find(|x| name(*x) == s)
                        .ok_or_else(|| {
                            FromSqlError::Other(
                                format!("unknown {} {s:?}", stringify!($ty)).into(),
                            )
                        })
                }
            }
        };
    }

    by_name!(
        ChainKind,
        ChainKind::as_str,
        [ChainKind::Xdp, ChainKind::Tc]
    );
    by_name!(
        XdpMode,
        XdpMode::name,
        [XdpMode::Auto, XdpMode::Drv, XdpMode::Skb]
    );
    by_name!(
        TcDirection,
        dir_name,
        [TcDirection::Ingress, TcDirection::Egress]
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::AttachSpec;
    use crate::types::{tc::TcAttach, xdp::XdpAttach};

    #[test]
    fn chain_members_name_their_hook() {
        let xdp = AttachSpec::Xdp(XdpAttach {
            iface: "eth0".into(),
            netns: None,
            mode: XdpMode::Skb,
            priority: 5,
            proceed_on: vec!["pass".into()],
        });
        let j = xdp.chain().expect("xdp chains");
        assert_eq!(j.priority, 5);
        assert_eq!(j.hook.to_string(), "xdp chain on eth0");
        assert_eq!(j.hook.mode, XdpMode::Skb);

        let tc = |legacy| {
            AttachSpec::Tc(TcAttach {
                iface: "eth0".into(),
                netns: Some("/run/netns/a".into()),
                direction: TcDirection::Egress,
                priority: 1,
                proceed_on: vec![],
                legacy,
            })
        };
        let h = tc(false).chain().expect("tc chains").hook;
        assert_eq!(h.to_string(), "tc chain on eth0 egress");
        assert!(
            tc(true).chain().is_none(),
            "legacy tc filters are not chained"
        );

        let mut other = h.clone();
        other.mode = XdpMode::Drv;
        assert!(h.same_place(&other), "the mode is not where the hook is");
        other.netns = None;
        assert!(!h.same_place(&other));
    }
}
