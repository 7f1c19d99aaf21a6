//! Compile-time checks of `#[derive(Event)]`, pinned with trybuild.
#![allow(missing_docs)]

#[test]
fn derive_event_cases() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass_*.rs");
    cases.compile_fail("tests/ui/fail_*.rs");
}
