//! runc-style log lines for `--log`: podman and containerd read the last error from this file.

use std::io::Write;
use std::path::Path;

use super::cli::LogFormat;

/// Appends one line at `level` to the log file (best effort: logging must never fail a command).
pub fn write(path: &Path, format: LogFormat, level: &str, msg: &str) {
    let time = box_runtime::state::now_rfc3339();
    let line = match format {
        LogFormat::Json => {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}"),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
