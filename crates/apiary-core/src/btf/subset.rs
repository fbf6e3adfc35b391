//! A self-contained piece of a type table: one type and everything it refers to, renumbered
//! from 1. A package carries the event types it found only in DWARF this way, so events still
//! decode once the DWARF is stripped (see `apiary::package`).

use super::*;

/// More types than this are not worth carrying: an event struct and its members' types are
/// tens of types; thousands mean it points into kernel structures.
pub const MAX_TYPES: usize = 512;

/// A standalone list of types: appended to [`Btf::empty`] it gives ids 1..=len, with the root
/// at `root`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TypeSubset {
    pub root: TypeId,
    pub types: Vec<Type>,
}

impl Type {
    /// Rewrites every type id this type refers to (the same ones [`Type::refs`] lists).
    fn map_refs(&mut self, f: &mut dyn FnMut(TypeId) -> TypeId) {
        match self {
            Type::Void
            | Type::Int { .. }
            | Type::Fwd { .. }
            | Type::Enum { .. }
            | Type::Float { .. } => {}
            Type::Ptr { target }
            | Type::Typedef { target, .. }
            | Type::Volatile { target }
            | Type::Const { target }
            | Type::Restrict { target }
            | Type::DeclTag { target, .. }
            | Type::TypeTag { target, .. } => *target = f(*target),
            Type::Array { elem, index, .. } => {
                *elem = f(*elem);
                *index = f(*index);
            }
            Type::Struct { members, .. } | Type::Union { members, .. } => {
                for m in members {
                    m.ty = f(m.ty);
                }
            }
            Type::Func { proto, .. } => *proto = f(*proto),
            Type::FuncProto { ret, params } => {
                *ret = f(*ret);
                for p in params {
                    p.1 = f(p.1);
                }
            }
            Type::Var { ty, .. } => *ty = f(*ty),
            Type::DataSec { vars, .. } => {
                for v in vars {
                    v.ty = f(v.ty);
                }
            }
        }
    }
}

impl TypeSubset {
    /// `root` and every type reachable from it, or None when `root` is unknown or the closure
    /// exceeds [`MAX_TYPES`].
    pub fn extract(btf: &Btf, root: TypeId) -> Option<TypeSubset> {
        btf.get(root)?;
        // Old id -> new id, in discovery order; void stays 0.
        let mut order: Vec<TypeId> = Vec::new();
        let mut new_id: std::collections::HashMap<TypeId, TypeId> = Default::default();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if id == 0 || new_id.contains_key(&id) {
                continue;
            }
            let t = btf.get(id)?;
            order.push(id);
            new_id.insert(id, order.len() as TypeId);
            if order.len() > MAX_TYPES {
                return None;
            }
            stack.extend(t.refs());
        }
        let types = order
            .iter()
            .map(|id| {
                let mut t = btf.get(*id).cloned().unwrap_or(Type::Void);
                t.map_refs(&mut |r| new_id.get(&r).copied().unwrap_or(0));
                t
            })
            .collect();
        Some(TypeSubset {
            root: new_id.get(&root).copied().unwrap_or(0),
            types,
        })
    }

    /// The types as a table of their own, checked like parsed BTF; returns it with the root's id.
    pub fn to_btf(&self) -> Result<(Btf, TypeId), BtfError> {
        if self.types.len() > MAX_TYPES {
            return Err(BtfError::BadHeader {
                reason: format!("{} carried types, more than {MAX_TYPES}", self.types.len()),
            });
        }
        let mut btf = Btf::empty();
        btf.append(self.types.clone())?;
        if self.root == 0 || btf.get(self.root).is_none() {
            return Err(BtfError::BadHeader {
                reason: format!("carried root type {} is not among them", self.root),
            });
        }
        Ok((btf, self.root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{event_type, Format};

    /// A struct only DWARF holds, carried as a subset (through JSON, as in a package), decodes
    /// into the same columns as from the object itself.
    #[test]
    fn a_carried_event_type_decodes_like_the_original() {
        let object = std::fs::read(apiary_fixtures::object("varlen")).unwrap();
        let mut info = crate::elf::inspect(&object).unwrap();
        let t = event_type(&mut info, &object, "events", None)
            .unwrap()
            .expect("an event type");
        assert!(t.from_dwarf || !info.btf.as_ref().unwrap().is_native(t.id));
        let btf = info.btf.as_ref().unwrap();
        let sub = TypeSubset::extract(btf, t.id).expect("small enough");
        assert!(sub.types.len() < 20, "{:?}", sub.types);
        let json = serde_json::to_string(&sub).unwrap();
        let back: TypeSubset = serde_json::from_str(&json).unwrap();
        let (carried, root) = back.to_btf().unwrap();
        let a = Format::new(btf, t.id).unwrap();
        let b = Format::new(&carried, root).unwrap();
        assert_eq!(a.type_name(), b.type_name());
        assert_eq!(a.columns(), b.columns());
        assert_eq!(a.size(), b.size());
    }

    #[test]
    fn malformed_subsets_are_refused() {
        let dangling = TypeSubset {
            root: 1,
            types: vec![Type::Ptr { target: 7 }],
        };
        assert!(dangling.to_btf().is_err());
        let no_root = TypeSubset {
            root: 3,
            types: vec![Type::Void],
        };
        assert!(no_root.to_btf().is_err());
        assert!(TypeSubset::extract(&Btf::empty(), 5).is_none());
    }
}
