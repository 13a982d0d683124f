//! What a client's event stream must hold, and how a stream read from the server is compared
//! with it. Events are `{"type", "event"}`; a `Time`/`time` the model cannot know is `null`.

use serde_json::Value;

/// The next events a queue must deliver.
#[derive(Debug, Clone)]
pub enum Expected {
    One(Value),
    /// Blocks of events that may come in any order, each block kept together: the logout
    /// cascades of users one sweep takes offline (one lock orders changes, docs/design.md, Event
    /// delivery, and each user's going offline is its own change).
    AnyOrder(Vec<Vec<Value>>),
}

/// How many events `expected` stands for.
pub fn count(expected: &[Expected]) -> usize {
    expected
        .iter()
        .map(|e| match e {
            Expected::One(_) => 1,
            Expected::AnyOrder(blocks) => blocks.iter().map(Vec::len).sum(),
        })
        .sum()
}

/// Unix seconds a time the model cannot predict must lie within.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

/// Compares `actual` with `expected`: equal, except that where `expected` has `null` for a
/// `Time`/`time`, `actual` may have any integer within `window`.
pub fn same(expected: &Value, actual: &Value, window: Window) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter().all(|(key, ev)| {
                    a.get(key).is_some_and(|av| {
                        let loose_time = (key == "Time" || key == "time") && ev.is_null();
                        if loose_time {
                            av.as_i64()
                                .is_some_and(|t| (window.from..=window.to).contains(&t))
                        } else {
                            same(ev, av, window)
                        }
                    })
                })
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| same(ev, av, window))
        }
        _ => expected == actual,
    }
}

/// Checks that `actual` is exactly the stream `expected` describes.
pub fn check(expected: &[Expected], actual: &[Value], window: Window) -> Result<(), String> {
    let mismatch = || {
        format!(
            "event stream differs\n expected: {}\n   actual: {}",
            show_expected(expected),
            show(actual)
        )
    };
    if count(expected) != actual.len() {
        return Err(mismatch());
    }
    let mut next = actual.iter();
    for item in expected {
        match item {
            Expected::One(e) => {
                if !next.next().is_some_and(|a| same(e, a, window)) {
                    return Err(mismatch());
                }
            }
            Expected::AnyOrder(blocks) => {
                let mut left: Vec<&Vec<Value>> = blocks.iter().collect();
                while !left.is_empty() {
                    let rest: Vec<&Value> = next.clone().collect();
                    // Each block starts with a different user's LogoutEvent, so one fits at most.
                    let fits = left.iter().position(|block| {
                        block.len() <= rest.len()
                            && block.iter().zip(&rest).all(|(e, a)| same(e, a, window))
                    });
                    let Some(i) = fits else {
                        return Err(mismatch());
                    };
                    let block = left.remove(i);
                    next.nth(block.len() - 1);
                }
            }
        }
    }
    Ok(())
}

fn show(events: &[Value]) -> String {
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    format!("[\n    {}\n  ]", lines.join("\n    "))
}

fn show_expected(expected: &[Expected]) -> String {
    let mut lines = Vec::new();
    for item in expected {
        match item {
            Expected::One(e) => lines.push(e.to_string()),
            Expected::AnyOrder(blocks) => {
                lines.push("(these blocks in any order:".into());
                for block in blocks {
                    lines.push(format!("  {}", show(block)));
                }
                lines.push(")".into());
            }
        }
    }
    format!("[\n    {}\n  ]", lines.join("\n    "))
}
