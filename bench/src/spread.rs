//! Spread of one figure over a benchmark's rounds: min, median, max.

use serde::Serialize;

/// Min, median (the mean of the middle two for an even count) and max of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Spread {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of `values`; `None` for no values.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let (min, max) = (*v.first()?, *v.last()?);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            f64::midpoint(v[mid - 1], v[mid])
        };
        Some(Self { min, median, max })
    }

    /// `min/median/max` with `digits` decimals.
    pub(crate) fn show(self, digits: usize) -> String {
        format!(
            "{:.d$}/{:.d$}/{:.d$}",
            self.min,
            self.median,
            self.max,
            d = digits
        )
    }

    /// `min/median/max` of ratios, e.g. `2.13/2.54/2.79`.
    pub(crate) fn ratios(self) -> String {
        self.show(2)
    }

    /// `min/median/max` in thousands, e.g. `98k/120k/141k`.
    pub(crate) fn kilo(self) -> String {
        format!(
            "{:.0}k/{:.0}k/{:.0}k",
            self.min / 1e3,
            self.median / 1e3,
            self.max / 1e3
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!(s.show(0), "1/2/3");
        assert_eq!(
            Spread::of([4.0, 1.0, 2.0, 3.0]).unwrap().ratios(),
            "1.00/2.50/4.00"
        );
        assert_eq!(Spread::of([1500.0, 2500.0]).unwrap().kilo(), "2k/2k/2k");
        assert!(Spread::of([]).is_none());
    }
}
