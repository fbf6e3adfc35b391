use crate::crd::*;
use kube::CustomResourceExt;
use serde_json::Value;

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let v = serde_json::to_value(crd).unwrap();
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every `x-kubernetes-validations` rule anywhere under `v`, with its path.
fn rules(v: &Value, path: &str, out: &mut Vec<(String, String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(rs)) = m.get("x-kubernetes-validations") {
                for r in rs {
                    out.push((
                        path.to_string(),
                        r["rule"].as_str().unwrap_or_default().to_string(),
                        r["message"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
            for (k, v) in m {
                rules(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| rules(v, path, out)),
        _ => {}
    }
}

#[test]
fn every_type_has_one_table_entry_named_as_serialized() {
    for e in TYPES {
        assert_eq!(serde_json::to_value(e.ty).unwrap(), e.name, "{}", e.name);
        assert_eq!(e.ty.entry().name, e.name);
        assert_eq!(TYPES.iter().filter(|o| o.ty == e.ty).count(), 1);
        assert_eq!(TYPES.iter().filter(|o| o.member == e.member).count(), 1);
    }
    // The members the program struct has are exactly the table's, in its order.
    let p = ApplicationProgram::default();
    let members: Vec<&str> = p.members().iter().map(|(m, _)| *m).collect();
    let table: Vec<&str> = TYPES.iter().map(|e| e.member).collect();
    assert_eq!(members, table);
    // And each is a field of the serialized program under that name.
    let schema = schemars::schema_for!(ApplicationProgram);
    let props = schema.get("properties").unwrap().as_object().unwrap();
    for m in table {
        assert!(props.contains_key(m), "program schema lacks member {m}");
    }
}

#[test]
fn four_crds_with_scope_status_and_columns() {
    let crds = crds();
    let names: Vec<(String, String)> = crds
        .iter()
        .map(|c| (c.metadata.name.clone().unwrap(), c.spec.scope.clone()))
        .collect();
    assert_eq!(
        names,
        [
            (
                "bpfapplications.apiary.io".to_string(),
                "Namespaced".to_string()
            ),
            ("clusterbpfapplications.apiary.io".into(), "Cluster".into()),
            ("bpfapplicationstates.apiary.io".into(), "Namespaced".into()),
            (
                "clusterbpfapplicationstates.apiary.io".into(),
                "Cluster".into()
            ),
            ("tracejobs.apiary.io".into(), "Cluster".into()),
        ]
    );
    for c in &crds {
        let v = &c.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources.as_ref().unwrap().status.is_some(),
            "status subresource"
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.json_path.as_str())
            .collect();
        // A TraceJob's status is per node, without conditions.
        if c.spec.names.kind != "TraceJob" {
            assert!(cols.contains(&".status.conditions[0].reason"), "{cols:?}");
        }
        assert!(cols.contains(&".metadata.creationTimestamp"));
        // Every column points at a field the schema has.
        let schema = schema_of(c);
        for col in cols.iter().filter(|c| !c.starts_with(".metadata")) {
            let mut node = &schema;
            for part in col.trim_start_matches('.').split('.') {
                let field = part.split('[').next().unwrap();
                node = &node["properties"][field];
                if part.contains('[') {
                    node = &node["items"];
                }
                assert!(!node.is_null(), "column {col} names no field ({field})");
            }
        }
    }
}

#[test]
fn application_schema_carries_the_cel_rules() {
    let schema = schema_of(&ClusterBpfApplication::crd());
    let mut found = Vec::new();
    rules(&schema, "", &mut found);
    let has = |needle: &str| found.iter().any(|(_, r, _)| r.contains(needle));
    assert!(has("has(self.image) != has(self.path)"), "{found:?}");
    for e in TYPES {
        let rule = format!(
            "self.type == '{}' ? has(self.{}) : !has(self.{})",
            e.name, e.member, e.member
        );
        let hit = found.iter().find(|(_, r, _)| *r == rule);
        let (path, _, message) = hit.unwrap_or_else(|| panic!("no rule for {}", e.name));
        assert!(path.ends_with(".spec.properties.programs.items"), "{path}");
        assert_eq!(*message, member_message(e));
    }
    assert!(has("primaryNodeInterface"));
    assert!(has("has(self.pods) != has(self.names)"));
    // Priorities are bounded by the schema itself.
    let xdp = &schema["properties"]["spec"]["properties"]["programs"]["items"]["properties"]["xdp"]
        ["properties"]["links"]["items"]["properties"]["priority"];
    assert_eq!(xdp["minimum"].as_f64(), Some(1.0));
    assert_eq!(xdp["maximum"].as_f64(), Some(1000.0));
    // Lists under CEL rules are bounded, so the apiserver can price the rules.
    let programs = &schema["properties"]["spec"]["properties"]["programs"];
    assert_eq!(programs["maxItems"], 128);
    assert_eq!(programs["minItems"], 1);
}

#[test]
fn schemas_are_structural() {
    // The apiserver refuses $ref and untyped unions; kube's derive must have inlined them all.
    for c in crds() {
        let text = serde_json::to_string(&schema_of(&c)).unwrap();
        for bad in ["$ref", "\"anyOf\"", "\"oneOf\"", "\"allOf\"", "\"const\""] {
            assert!(
                !text.contains(bad),
                "{}: {bad} in schema",
                c.metadata.name.unwrap()
            );
        }
    }
}

#[test]
fn crds_yaml_is_four_documents_that_read_back() {
    use serde::Deserialize;
    let text = crds_yaml().unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(docs.len(), crds().len());
    for d in &docs {
        assert_eq!(d["kind"], "CustomResourceDefinition");
        assert_eq!(d["apiVersion"], "apiextensions.k8s.io/v1");
    }
}
