//! Apply progress as plain lines, one per event (Terraform's style), which reads well both on a
//! terminal and in CI logs.

use std::io::Write;
use std::time::Duration;

use crate::apply::{Event, Reporter};
use crate::plan::Action;

pub struct LineReporter<'a> {
    out: &'a mut dyn Write,
    color: bool,
}

impl<'a> LineReporter<'a> {
    pub fn new(out: &'a mut dyn Write, color: bool) -> LineReporter<'a> {
        LineReporter { out, color }
    }

    fn bold(&self, s: &str) -> String {
        if self.color { format!("\x1b[1m{s}\x1b[0m") } else { s.to_string() }
    }
}

fn verbs(a: Action) -> (&'static str, &'static str, &'static str) {
    match a {
        Action::Create => ("Creating...", "Still creating...", "Creation complete"),
        Action::Update => ("Modifying...", "Still modifying...", "Modifications complete"),
        Action::Delete => ("Destroying...", "Still destroying...", "Destruction complete"),
        Action::DeleteThenCreate | Action::CreateThenDelete => ("Replacing...", "Still replacing...", "Replacement complete"),
        Action::Read | Action::NoOp => ("Reading...", "Still reading...", "Read complete"),
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{}s", s / 60, s % 60) } else { format!("{s}s") }
}

impl Reporter for LineReporter<'_> {
    fn event(&mut self, event: Event) {
        let line = match event {
            Event::Started { address, action } => format!("{}: {}", self.bold(&address.to_string()), verbs(action).0),
            Event::StillRunning { address, action, elapsed } => format!("{}: {} [{} elapsed]", self.bold(&address.to_string()), verbs(action).1, secs(elapsed)),
            Event::Finished { address, action, elapsed } => format!("{}: {} after {}", self.bold(&address.to_string()), verbs(action).2, secs(elapsed)),
            Event::Failed { address, message, .. } => {
                let a = address.to_string();
                let message = message.strip_prefix(&format!("{a}: ")).unwrap_or(&message).to_string();
                format!("{}: failed: {message}", self.bold(&a))
            }
            Event::Skipped { addresses, because } => {
                format!("Skipped {} because {because} failed", addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            }
            Event::Interrupted { running } => {
                format!("Interrupt received: no new operations will start; waiting for {running} running operation(s) to finish, then saving state.")
            }
        };
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}
