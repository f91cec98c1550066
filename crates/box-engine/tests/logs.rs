//! The log file: CRI records, partial lines, tail, since, timestamps, follow until stopped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use box_engine::logs::{
    format_rfc3339, parse_record, parse_rfc3339, parse_since, read, LogQuery, LogWriter, Stream,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "box-logs-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    fn log(&self) -> PathBuf {
        self.0.join("ctr.log")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, 5)
}

fn collect(path: &std::path::Path, q: &LogQuery) -> (String, String) {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    read(path, q, &mut o, &mut e, || true).expect("read");
    (
        String::from_utf8(o).expect("utf8"),
        String::from_utf8(e).expect("utf8"),
    )
}

#[test]
fn writer_emits_cri_records_one_per_line_with_partial_tail() {
    let d = TempDir::new("fmt");
    let mut w = LogWriter::open(&d.log()).expect("open");
    w.write_at(at(1_700_000_000), Stream::Stdout, b"one\ntwo\nthr")
        .expect("write");
    w.write_at(at(1_700_000_001), Stream::Stderr, b"err\n")
        .expect("write");
    w.write_at(at(1_700_000_002), Stream::Stdout, b"ee\n\n")
        .expect("write");
    let text = std::fs::read_to_string(d.log()).expect("log");
    assert_eq!(
        text,
        "2023-11-14T22:13:20.000000005Z stdout F one\n\
         2023-11-14T22:13:20.000000005Z stdout F two\n\
         2023-11-14T22:13:20.000000005Z stdout P thr\n\
         2023-11-14T22:13:21.000000005Z stderr F err\n\
         2023-11-14T22:13:22.000000005Z stdout F ee\n\
         2023-11-14T22:13:22.000000005Z stdout F \n"
    );
    let (o, e) = collect(&d.log(), &LogQuery::default());
    assert_eq!(o, "one\ntwo\nthree\n\n");
    assert_eq!(e, "err\n");
}

#[test]
fn record_parser_rejects_foreign_lines_and_keeps_spaces_in_data() {
    let r = parse_record(b"2023-11-14T22:13:20.000000005Z stderr P a b  c").expect("record");
    assert_eq!(r.stream, Stream::Stderr);
    assert!(!r.full);
    assert_eq!(r.data, b"a b  c");
    assert_eq!(r.time, at(1_700_000_000));
    for bad in [
        &b"garbage"[..],
        b"2023-11-14T22:13:20Z stdin F x",
        b"2023-11-14T22:13:20Z stdout X x",
        b"notatime stdout F x",
    ] {
        assert!(
            parse_record(bad).is_none(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn rfc3339_round_trips_and_accepts_offsets() {
    let t = UNIX_EPOCH + Duration::new(1_795_420_383, 123_456_789);
    assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
    assert_eq!(
        parse_rfc3339("2026-11-23T08:53:03+01:00"),
        Some(UNIX_EPOCH + Duration::from_secs(1_795_420_383))
    );
    assert_eq!(
        parse_rfc3339("2000-02-29T00:00:00.5Z"),
        Some(UNIX_EPOCH + Duration::new(951_782_400, 500_000_000))
    );
    assert_eq!(parse_rfc3339("2000-13-01T00:00:00Z"), None);
    assert_eq!(parse_rfc3339("2000-01-01T00:00:00"), None);
}

#[test]
fn since_accepts_times_unix_seconds_and_durations() {
    let now = UNIX_EPOCH + Duration::from_secs(10_000);
    assert_eq!(
        parse_since("10m", now),
        Some(UNIX_EPOCH + Duration::from_secs(9_400))
    );
    assert_eq!(
        parse_since("1h30s", now),
        Some(UNIX_EPOCH + Duration::from_secs(6_370))
    );
    assert_eq!(
        parse_since("1700000000", now),
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert_eq!(
        parse_since("1970-01-01T00:00:01Z", now),
        Some(at(1) - Duration::new(0, 5))
    );
    assert_eq!(parse_since("10x", now), None);
    assert_eq!(parse_since("m", now), None);
}

#[test]
fn tail_counts_lines_over_both_streams_and_keeps_partials_together() {
    let d = TempDir::new("tail");
    let mut w = LogWriter::open(&d.log()).expect("open");
    for i in 0..10 {
        w.write_at(at(100 + i), Stream::Stdout, format!("out {i}\n").as_bytes())
            .expect("write");
        w.write_at(at(100 + i), Stream::Stderr, format!("err {i}\n").as_bytes())
            .expect("write");
    }
    w.write_at(at(200), Stream::Stdout, b"par").expect("write");
    w.write_at(at(201), Stream::Stdout, b"tial\n")
        .expect("write");
    let q = |tail| LogQuery {
        tail: Some(tail),
        ..Default::default()
    };
    let (o, e) = collect(&d.log(), &q(3));
    assert_eq!(o, "out 9\npartial\n");
    assert_eq!(e, "err 9\n");
    let (o, e) = collect(&d.log(), &q(0));
    assert_eq!((o.as_str(), e.as_str()), ("", ""));
    let (o, e) = collect(&d.log(), &q(1000));
    assert_eq!(o.lines().count(), 11);
    assert_eq!(e.lines().count(), 10);
}

#[test]
fn since_filters_by_record_time_and_timestamps_prefix_each_line() {
    let d = TempDir::new("since");
    let mut w = LogWriter::open(&d.log()).expect("open");
    w.write_at(at(100), Stream::Stdout, b"old\n")
        .expect("write");
    w.write_at(at(200), Stream::Stdout, b"new ").expect("write");
    w.write_at(at(201), Stream::Stdout, b"line\n")
        .expect("write");
    w.write_at(at(202), Stream::Stderr, b"e\n").expect("write");
    let q = LogQuery {
        since: Some(at(150)),
        timestamps: true,
        ..Default::default()
    };
    let (o, e) = collect(&d.log(), &q);
    assert_eq!(o, format!("{} new line\n", format_rfc3339(at(200))));
    assert_eq!(e, format!("{} e\n", format_rfc3339(at(202))));
    let q = LogQuery {
        since: Some(at(150)),
        tail: Some(5),
        ..Default::default()
    };
    assert_eq!(collect(&d.log(), &q).0, "new line\n");
}

#[test]
fn follow_reads_new_records_until_the_stop_condition_then_drains() {
    let d = TempDir::new("follow");
    let path = d.log();
    let mut w = LogWriter::open(&path).expect("open");
    w.write(Stream::Stdout, b"first\n").expect("write");
    let exited = Arc::new(AtomicBool::new(false));
    let writer = {
        let exited = exited.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(250));
            w.write(Stream::Stdout, b"second\n").expect("write");
            std::thread::sleep(Duration::from_millis(250));
            w.write(Stream::Stderr, b"last words\n").expect("write");
            exited.store(true, Ordering::SeqCst);
        })
    };
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let q = LogQuery {
        follow: true,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    read(&path, &q, &mut o, &mut e, || exited.load(Ordering::SeqCst)).expect("follow");
    writer.join().expect("writer");
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&o), "first\nsecond\n");
    assert_eq!(String::from_utf8_lossy(&e), "last words\n");
}

#[test]
fn follow_waits_for_a_missing_log_and_a_missing_log_is_empty() {
    let d = TempDir::new("missing");
    let (o, e) = collect(&d.log(), &LogQuery::default());
    assert_eq!((o.as_str(), e.as_str()), ("", ""));
    let path = d.log();
    let p2 = path.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut w = LogWriter::open(&p2).expect("open");
        w.write(Stream::Stdout, b"late\n").expect("write");
    });
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let q = LogQuery {
        follow: true,
        ..Default::default()
    };
    let mut calls = 0;
    read(&path, &q, &mut o, &mut e, || {
        calls += 1;
        calls > 6
    })
    .expect("follow");
    writer.join().expect("writer");
    assert_eq!(String::from_utf8_lossy(&o), "late\n");
}
