pub mod bench;
pub mod bench_allreduce;
pub mod bench_data;
pub mod bench_models;
pub(crate) mod bench_profile;
pub mod bench_step;
pub mod curves;
pub mod demo;
pub mod distill;
pub mod eval;
pub mod inspect;
pub mod pretrain;
pub mod sample;
pub mod schedule;

/// The command line as a user types it (`codi` and the arguments), for the records a run writes: the path
/// of the binary that ran says nothing to a reader.
pub fn command_line() -> String {
    std::iter::once("codi".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--step-counts 1,2,4` → [1, 2, 4]; each at least 1.
pub fn parse_step_counts(s: &str) -> anyhow::Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--step-counts '{s}': {e}"))?;
    if v.is_empty() || v.contains(&0) {
        anyhow::bail!("--step-counts '{s}': give step counts of at least 1, e.g. 1,2,4");
    }
    Ok(v)
}

/// A count flag (steps, batch, samples, epochs): a whole number of at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// A scale or rate that cannot be negative (guidance): a finite number ≥ 0.
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a finite number ≥ 0, got {v}")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

/// Seconds between log lines: a finite number > 0.
/// A rate that must be above zero (a learning rate): a finite number > 0.
pub fn positive_number(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a finite number > 0, got {v}")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

pub fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a finite number of seconds > 0, got {v}")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_parsers_refuse_zero_negative_and_non_finite_values() {
        assert_eq!(at_least_one("4"), Ok(4));
        assert!(
            at_least_one("0").is_err() && at_least_one("-1").is_err() && at_least_one("x").is_err()
        );
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(
            non_negative("-0.5").is_err()
                && non_negative("nan").is_err()
                && non_negative("inf").is_err()
        );
        assert_eq!(positive_seconds("2.5"), Ok(2.5));
        assert!(positive_seconds("0").is_err() && positive_seconds("-1").is_err());
        assert!(parse_step_counts("1,0").is_err() && parse_step_counts("1,2,4").is_ok());
    }
}
