//! A strict reader of the OpenMetrics text that the services' `/metrics` serve, for tests:
//! every line must be metadata (`# HELP`, `# TYPE`, `# UNIT`), a sample of the family declared
//! just above it (with the suffixes its type allows), or the final `# EOF`. No parser crate is
//! in the dependency tree; this follows the OpenMetrics 1.0 text format closely enough to
//! refuse anything `prometheus-client` would not write.

use std::collections::HashSet;

use anyhow::{Context, bail, ensure};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (the family's name plus a suffix such as `_total`).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family: its metadata and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name (without a sample suffix).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, … (`unknown` when no `# TYPE` was given).
    pub kind: String,
    /// `# HELP` text.
    pub help: Option<String>,
    /// Samples in order.
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Families in order.
    pub families: Vec<Family>,
}

impl Exposition {
    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Every sample, in order.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| f.samples.iter())
    }

    /// The value of the first sample called `name` that carries every label in `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
    }

    /// Like [`Self::value`], for counts: `None` unless the value is a whole number >= 0.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.value(name, labels)
            .filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v < 2f64.powi(53))
            .map(|v| v as u64)
    }

    /// Checks the Wavry conventions (control/README.md, "Metrics"): every family is named
    /// `{prefix}…`, every counter sample ends in `_total` (or is its `_created`), and every
    /// sample carries exactly the constant labels `const_labels` (histogram buckets add `le`).
    pub fn check_conventions(&self, prefix: &str, const_labels: &[&str]) -> anyhow::Result<()> {
        ensure!(!self.families.is_empty(), "no metric families");
        for f in &self.families {
            ensure!(
                f.name.starts_with(prefix),
                "family {} lacks the prefix {prefix}",
                f.name
            );
            ensure!(f.help.is_some(), "family {} has no # HELP", f.name);
            for s in &f.samples {
                if f.kind == "counter" {
                    ensure!(
                        s.name.ends_with("_total") || s.name.ends_with("_created"),
                        "counter sample {} does not end in _total",
                        s.name
                    );
                }
                let mut keys: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
                if f.kind == "histogram" && s.name.ends_with("_bucket") {
                    keys.retain(|k| *k != "le");
                }
                keys.sort_unstable();
                let mut want = const_labels.to_vec();
                want.sort_unstable();
                ensure!(
                    keys == want,
                    "sample {} has labels {keys:?}, expected {want:?}",
                    s.name
                );
            }
        }
        Ok(())
    }
}

/// Suffixes a sample of a family of type `kind` may add to the family name.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" | "gaugehistogram" => {
            &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
        }
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        // gauge, stateset, unknown
        _ => &[""],
    }
}

fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn parse_value(s: &str) -> anyhow::Result<f64> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().with_context(|| format!("bad value {s:?}")),
    }
}

/// Parses `{k="v",…}` at the start of `s`; returns the labels and the rest after `}`.
fn parse_labels(s: &str) -> anyhow::Result<(Vec<(String, String)>, &str)> {
    let mut rest = s.strip_prefix('{').context("labels must start with {")?;
    let mut labels = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').context("label without =")?;
        let key = &rest[..eq];
        ensure!(valid_name(key), "bad label name {key:?}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .context("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => bail!("bad escape {other:?} in a label value"),
                },
                Some((_, '\n')) | None => bail!("unterminated label value"),
                Some((_, c)) => value.push(c),
            }
        };
        ensure!(
            !labels.iter().any(|(k, _): &(String, String)| k == key),
            "label {key} repeated"
        );
        labels.push((key.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else {
            ensure!(rest.starts_with('}'), "expected , or }} after a label");
        }
    }
}

/// Parses OpenMetrics text; an error names the offending line.
pub fn parse(text: &str) -> anyhow::Result<Exposition> {
    ensure!(
        text.ends_with("# EOF\n"),
        "the text must end with \"# EOF\\n\""
    );
    let mut out = Exposition::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        ensure!(!eof, "line {n}: text after # EOF");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        let r: anyhow::Result<()> = (|| {
            if let Some(meta) = line.strip_prefix("# ") {
                let mut parts = meta.splitn(3, ' ');
                let (what, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let arg = parts.next();
                ensure!(valid_name(name), "bad family name {name:?}");
                // Metadata of a new family opens it; more metadata may follow for the same one.
                if out.families.last().is_none_or(|f| f.name != name) {
                    ensure!(seen.insert(name.to_owned()), "family {name} appears twice");
                    out.families.push(Family {
                        name: name.to_owned(),
                        kind: "unknown".into(),
                        help: None,
                        samples: Vec::new(),
                    });
                }
                let Some(f) = out.families.last_mut() else {
                    bail!("no family")
                };
                ensure!(f.samples.is_empty(), "metadata after samples");
                match what {
                    "TYPE" => {
                        let kind = arg.context("# TYPE without a type")?;
                        ensure!(
                            matches!(
                                kind,
                                "counter"
                                    | "gauge"
                                    | "histogram"
                                    | "gaugehistogram"
                                    | "stateset"
                                    | "info"
                                    | "summary"
                                    | "unknown"
                            ),
                            "unknown type {kind}"
                        );
                        kind.clone_into(&mut f.kind);
                    }
                    "HELP" => f.help = Some(arg.unwrap_or("").to_owned()),
                    "UNIT" => {}
                    other => bail!("unknown metadata {other:?}"),
                }
                return Ok(());
            }
            ensure!(!line.starts_with('#'), "bad comment line");
            let name_end = line.find(['{', ' ']).context("a sample needs a value")?;
            let name = &line[..name_end];
            ensure!(valid_name(name), "bad sample name {name:?}");
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..])?
            } else {
                (Vec::new(), &line[name_end..])
            };
            let rest = rest
                .strip_prefix(' ')
                .context("a space must precede the value")?;
            // value [timestamp] [# exemplar]
            let value = rest.split(' ').next().unwrap_or("");
            let value = parse_value(value)?;
            let Some(f) = out.families.last_mut() else {
                bail!("sample {name} before any # TYPE")
            };
            let suffix = name
                .strip_prefix(f.name.as_str())
                .with_context(|| format!("sample {name} outside its family {}", f.name))?;
            ensure!(
                suffixes(&f.kind).contains(&suffix),
                "sample {name}: suffix {suffix:?} not allowed for a {}",
                f.kind
            );
            if f.kind == "counter" {
                ensure!(value >= 0.0, "counter {name} is negative");
            }
            f.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
            Ok(())
        })();
        r.with_context(|| format!("line {n}: {line:?}"))?;
    }
    ensure!(eof, "no # EOF");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_prometheus_client_writes() {
        let text = "# HELP wavry_x_hits Hits.\n# TYPE wavry_x_hits counter\n\
                    wavry_x_hits_total{relay_id=\"a\\\"b\"} 3\n\
                    # HELP wavry_x_lat Latency.\n# TYPE wavry_x_lat histogram\n\
                    wavry_x_lat_sum{relay_id=\"r\"} 1.5\nwavry_x_lat_count{relay_id=\"r\"} 2\n\
                    wavry_x_lat_bucket{le=\"+Inf\",relay_id=\"r\"} 2\n# EOF\n";
        let e = parse(text).unwrap();
        assert_eq!(
            e.value("wavry_x_hits_total", &[("relay_id", "a\"b")]),
            Some(3.0)
        );
        assert_eq!(e.value("wavry_x_lat_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(e.family("wavry_x_lat").unwrap().kind, "histogram");
        e.check_conventions("wavry_x_", &["relay_id"]).unwrap();
        assert!(e.check_conventions("wavry_y_", &["relay_id"]).is_err());
        assert!(e.check_conventions("wavry_x_", &[]).is_err());
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            "wavry_a 1\n# EOF\n",                           // no family
            "# TYPE a counter\na 1\n# EOF\n",               // counter without _total
            "# TYPE a gauge\na{x=\"1} 1\n# EOF\n",          // unterminated label
            "# TYPE a gauge\na one\n# EOF\n",               // bad value
            "# TYPE a gauge\na 1\n",                        // no EOF
            "# TYPE a gauge\na 1\n# TYPE a gauge\n# EOF\n", // repeated family
            "# TYPE a gauge\nb 1\n# EOF\n",                 // sample outside family
            "# TYPE a counter\na_total -1\n# EOF\n",        // negative counter
            "# TYPE a gauge\na 1\n# EOF\nx\n",              // after EOF
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
