//! The lean image's entry point (the `box-supervisor` binary): `box-supervisor -- FULL ARGS…`
//! with the running box handed over in [`crate::handover::ENV`]. It runs the pump until the box
//! has ended, then hands everything back by executing `FULL ARGS…` (the full image, which
//! records the end and cleans up).

use std::path::Path;

use crate::handover::{Handover, ENV};
use crate::pump;

/// Runs the lean image; `args` are the process's arguments after the program name.
pub fn main(args: &[String]) -> ! {
    let back = match args.iter().position(|a| a == "--") {
        Some(i) if i + 1 < args.len() => &args[i + 1..],
        _ => die("usage: box-supervisor -- FULL-IMAGE ARGS… (started by box, not by hand)"),
    };
    let Ok(state) = std::env::var(ENV) else {
        die("no hand-over state (box-supervisor is started by box, not by hand)")
    };
    std::env::remove_var(ENV);
    // SAFETY: the value comes from our own environment at start, written by the image that
    // executed us, and nothing in this process has taken any descriptor yet.
    let mut h = match unsafe { Handover::decode(&state) } {
        Ok(h) => h,
        Err(e) => die(&e.to_string()),
    };
    let Some(running) = h.running.take() else {
        die("the hand-over state names no running box")
    };
    let code = pump::pump(&mut h.hub, &mut h.log, running).unwrap_or(255);
    h.exit = Some(code);
    // Queued output is not part of the hand-over: write it out first.
    h.hub.drain(std::time::Duration::from_secs(1));
    let err = h.exec(Path::new(&back[0]), &back[1..]);
    // The full image is gone (box uninstalled?): the clients at least learn the exit code.
    h.hub.finish(code);
    die(&format!("cannot return to {}: {err}", back[0]))
}

fn die(msg: &str) -> ! {
    eprintln!("box-supervisor: {msg}");
    std::process::exit(1)
}
