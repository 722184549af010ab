//! What a harness run found, and the three ways it is printed: a table for people, JSON for
//! tools, JUnit XML for CI systems.

use serde::Serialize;

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The plugin behaved as the contract requires.
    Pass,
    /// It did not.
    Fail,
    /// Acceptable, but worth knowing (e.g. a declared non-deterministic plugin).
    Warn,
    /// Not run: the case checks something the plugin does not declare (the incremental cases
    /// of a plugin that writes no deltas). Counted as neither passed nor failed.
    Skip,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Stable case name, e.g. `round-trip/binary-keys`.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time of the case.
    pub millis: u128,
    /// Bytes of snapshot written by the case.
    pub bytes: u64,
    /// What was found, on one line (always set for failures and warnings): the first
    /// differing entry, a trap's cause and the guest's panic.
    pub message: String,
    /// Everything behind the message: wasm backtraces, the guest's output, what the host
    /// logged during the case. Shown by `--verbose` and in JSON, not in the table.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// All results for one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin file.
    pub plugin: String,
    /// Its described name.
    pub name: String,
    /// Its described format.
    pub format: String,
    /// The cases, in order.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Whether any case failed.
    pub fn failed(&self) -> bool {
        self.cases.iter().any(|c| c.outcome == Outcome::Fail)
    }

    /// The names of the cases that failed, in order.
    pub fn failures(&self) -> Vec<&str> {
        self.cases.iter().filter(|c| c.outcome == Outcome::Fail).map(|c| c.name.as_str()).collect()
    }

    /// The result of case `name`.
    pub fn case(&self, name: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.name == name)
    }

    /// A readable table, one line per case; with `verbose`, each failure's detail below it.
    pub fn to_table(&self, verbose: bool) -> String {
        let mut out = format!("plugin {} ({}, format {})\n", self.plugin, self.name, self.format);
        out.push_str(&format!("{:<38} {:<6} {:>9} {:>12}  {}\n", "case", "result", "time", "bytes", "details"));
        for c in &self.cases {
            let outcome = match c.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Warn => "warn",
                Outcome::Skip => "skip",
            };
            let message = c.message.lines().next().unwrap_or_default();
            out.push_str(&format!("{:<38} {:<6} {:>7}ms {:>12}  {message}\n", c.name, outcome, c.millis, c.bytes));
            if verbose && c.outcome != Outcome::Pass && !c.detail.is_empty() {
                for line in c.detail.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
        let failed = self.failures().len();
        let skipped = self.cases.iter().filter(|c| c.outcome == Outcome::Skip).count();
        let passed = self.cases.len() - failed - skipped;
        out.push_str(&format!("{} cases, {passed} passed, {failed} failed", self.cases.len()));
        if skipped > 0 {
            out.push_str(&format!(", {skipped} skipped"));
        }
        out.push('\n');
        if failed > 0 && !verbose {
            out.push_str("(--verbose or --format json show each failure's backtrace and log)\n");
        }
        out
    }

    /// JUnit XML, for CI systems; valid XML whatever the guest printed.
    pub fn to_junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report as JUnit, TestCase, TestCaseStatus, TestSuite};
        let mut suite = TestSuite::new(self.name.as_str());
        for c in &self.cases {
            let status = match c.outcome {
                Outcome::Pass | Outcome::Warn => TestCaseStatus::success(),
                Outcome::Skip => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(xml_safe(&c.message));
                    status
                }
                Outcome::Fail => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(xml_safe(&c.message));
                    status.set_description(xml_safe(&c.detail));
                    status
                }
            };
            let mut case = TestCase::new(c.name.as_str(), status);
            case.set_classname(self.name.as_str());
            case.set_time(std::time::Duration::from_millis(c.millis as u64));
            if c.outcome == Outcome::Warn {
                case.set_system_out(xml_safe(&format!("warning: {}", c.message)));
            }
            suite.add_test_case(case);
        }
        let mut report = JUnit::new(format!("snapshot-host plugin test {}", self.plugin));
        report.add_test_suite(suite);
        report.to_string().unwrap_or_else(|e| format!("<!-- JUnit serialization failed: {e} -->\n"))
    }
}

/// Text XML 1.0 can carry: control characters a guest may print (a NUL, an escape sequence)
/// become `\u{..}` escapes, which no XML parser rejects.
fn xml_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c.to_string(),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect()
}
