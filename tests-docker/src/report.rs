//! Measured figures: printed as `MEASURE <name> <value> <unit>` lines and appended to the file
//! named by `RAFTKV_DOCKER_RESULTS` (tests-docker/run.sh gathers them into its summary).

use std::io::Write;
use std::time::Duration;

pub fn measure(name: &str, value: f64, unit: &str) {
    let line = format!("MEASURE {name} {value:.3} {unit}");
    println!("{line}");
    if let Ok(path) = std::env::var("RAFTKV_DOCKER_RESULTS") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

pub fn measure_duration(name: &str, d: Duration) {
    measure(name, d.as_secs_f64(), "s");
}
