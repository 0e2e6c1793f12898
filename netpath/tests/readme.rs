//! The README's verdict list is the programs' and reasons' own: a reason added to
//! `netpath-common` without the README (or the other way round) fails here.
use netpath_common::{Program, Reason};

fn expected() -> String {
    let list = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "programs: {}\n\nreasons: {}\n",
        list(Program::ALL.iter().map(|p| p.name()).collect()),
        list(Reason::ALL.iter().map(|r| r.name()).collect())
    )
}

#[test]
fn readme_lists_every_program_and_reason_by_its_name() {
    let readme = include_str!("../../README.md");
    let start = "<!-- verdicts: kept equal to netpath-common's Program and Reason by a test -->\n";
    let from = readme
        .find(start)
        .expect("the README's verdict list marker")
        + start.len();
    let to = from
        + readme[from..]
            .find("<!-- /verdicts -->")
            .expect("its end marker");
    assert_eq!(
        &readme[from..to],
        expected(),
        "README.md's verdict list is stale; put this between the markers:\n{}",
        expected()
    );
}

#[test]
fn the_drop_prefix_means_a_drop() {
    for r in Reason::ALL {
        assert_eq!(r.is_drop(), r.name().starts_with("drop-"), "{}", r.name());
    }
}
