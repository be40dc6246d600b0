//! Validation results: every problem found in a resource, each with the path of the field
//! (`networking.inbound[0].port`) and a human reason. Validators push into a
//! [`Violations`] collector and never stop at the first problem.

use serde::Serialize;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Dotted path of the field, with `[i]` for list items and `["key"]` for map keys.
    pub field: String,
    /// Why the value is refused.
    pub message: String,
}

/// All problems found in one input; the error type of every validator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.summary())]
pub struct ValidationError {
    /// Never empty.
    pub violations: Vec<Violation>,
}

impl ValidationError {
    /// An error with a single violation.
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            violations: vec![Violation {
                field: field.into(),
                message: message.into(),
            }],
        }
    }

    /// `field: message; field: message`, as printed by the CLI.
    pub fn summary(&self) -> String {
        self.violations
            .iter()
            .map(|v| {
                if v.field.is_empty() {
                    v.message.clone()
                } else {
                    format!("{}: {}", v.field, v.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Collects violations while a validator walks a resource.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Merges another error, prefixing its paths with `prefix` (may be empty).
    pub fn extend(&mut self, prefix: &str, err: ValidationError) {
        for v in err.violations {
            let field = match (prefix.is_empty(), v.field.is_empty()) {
                (true, _) => v.field,
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}.{}", v.field),
            };
            self.0.push(Violation {
                field,
                message: v.message,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded.
    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { violations: self.0 })
        }
    }
}

/// Joins a parent path and a child field name.
pub fn path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}
