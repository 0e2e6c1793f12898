//! Label selectors with Kubernetes' semantics.
use std::collections::BTreeMap;

use super::records::{
    LabelSelector, Namespace, SelectorOperator, SelectorRequirement, NAMESPACE_NAME_LABEL,
};

pub type Labels = BTreeMap<String, String>;

impl LabelSelector {
    /// Every `matchLabels` pair and every expression hold; the empty selector
    /// matches everything.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

impl SelectorRequirement {
    /// `NotIn` and `DoesNotExist` hold where the key is absent; an unknown operator
    /// (refused by `validate`) matches nothing.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
            SelectorOperator::Unknown(_) => false,
        }
    }
}

/// A namespace's labels: its record's, and always `kubernetes.io/metadata.name`
/// (a namespace without a record has that one only).
pub fn namespace_labels(name: &str, record: Option<&Namespace>) -> Labels {
    let mut labels = record
        .map(|r| r.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: vec![SelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn each_operator_and_absent_keys() {
        let a = labels(&[("pod", "a"), ("tier", "web")]);
        let bare = labels(&[]);
        use SelectorOperator::*;
        let cases = [
            (expr("pod", In, &["a", "b"]), true, false),
            (expr("pod", In, &["b"]), false, false),
            (expr("pod", NotIn, &["a"]), false, true),
            (expr("pod", NotIn, &["b", "c"]), true, true),
            (expr("tier", Exists, &[]), true, false),
            (expr("tier", DoesNotExist, &[]), false, true),
            (expr("pod", Unknown("Exist".into()), &[]), false, false),
        ];
        for (sel, on_a, on_bare) in cases {
            assert_eq!(sel.matches(&a), on_a, "{sel:?} on {a:?}");
            assert_eq!(sel.matches(&bare), on_bare, "{sel:?} on no labels");
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold_and_empty_matches_all() {
        let a = labels(&[("pod", "a"), ("tier", "web")]);
        assert!(LabelSelector::default().matches(&a));
        assert!(LabelSelector::default().matches(&labels(&[])));
        let mut sel = expr("tier", SelectorOperator::Exists, &[]);
        sel.match_labels = labels(&[("pod", "a")]);
        assert!(sel.matches(&a));
        sel.match_labels = labels(&[("pod", "a"), ("env", "prod")]);
        assert!(!sel.matches(&a), "a missing matchLabels key fails");
        sel.match_labels = labels(&[("pod", "a")]);
        sel.match_expressions
            .push(expr("tier", SelectorOperator::In, &["db"]).match_expressions[0].clone());
        assert!(
            !sel.matches(&a),
            "one failing expression fails the selector"
        );
    }

    #[test]
    fn namespaces_always_carry_their_name_label() {
        let l = namespace_labels("x", None);
        assert_eq!(l, labels(&[(NAMESPACE_NAME_LABEL, "x")]));
        let mut rec = Namespace::default();
        rec.metadata.name = "y".into();
        rec.metadata.labels = labels(&[("ns", "y"), (NAMESPACE_NAME_LABEL, "wrong")]);
        let l = namespace_labels("y", Some(&rec));
        assert_eq!(l, labels(&[("ns", "y"), (NAMESPACE_NAME_LABEL, "y")]));
    }
}
