//! The figures' rows and their JSON sections, then the printed table and
//! `target/bench/report.json` (`report-quick.json` for a quick run).

use crate::procs;
use serde_json::{json, Value};
use std::time::Instant;

/// One line of the table.
pub struct Row {
    pub figure: &'static str,
    pub value: String,
    pub against: String,
    pub ratio: String,
    pub target: &'static str,
    pub met: bool,
}

/// What the figures measured so far, in the order they measured it.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    sections: serde_json::Map<String, Value>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// One section of report.json.
    pub fn section(&mut self, name: &str, value: Value) {
        self.sections.insert(name.into(), value);
    }

    /// Prints the table and writes the JSON report, with the machine's
    /// description and the run's length.
    pub fn finish(mut self, quick: bool, started: Instant) {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!(
            "cohort-bridge bench ({} run, {:.0} s; {cores} cores, {cpu})",
            if quick { "quick" } else { "full" },
            started.elapsed().as_secs_f64()
        );
        println!("| figure | value | against | ratio | target | met |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.figure,
                r.value,
                r.against,
                r.ratio,
                r.target,
                if r.met { "yes" } else { "NO" }
            );
        }
        self.section(
            "machine",
            json!({"cores": cores, "cpu": cpu, "quick": quick, "seconds": started.elapsed().as_secs_f64()}),
        );
        let table = Value::Array(
            self.rows
                .iter()
                .map(|r| json!({"figure": r.figure, "value": r.value, "against": r.against, "ratio": r.ratio, "target": r.target, "met": r.met}))
                .collect(),
        );
        self.section("table", table);
        let dir = procs::report_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(if quick {
            "report-quick.json"
        } else {
            "report.json"
        });
        match std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(self.sections)).unwrap_or_default(),
        ) {
            Ok(()) => println!("\nreport: {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}

/// `1234567.8` → `1,234,568`.
pub fn fmt_n(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}
