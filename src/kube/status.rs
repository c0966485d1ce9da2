//! Status (placeholder).
pub struct Category;
pub struct Check;
pub struct CheckKind;
pub struct Row;
pub struct State;
pub struct StatusReport;
