pub mod bench;
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
