//! The waterfall's time axis: linear, except that a long stretch when nothing runs (a
//! durable sleep of hours, a long wait before a retry) is drawn as a short break, so it does
//! not squeeze every other bar into a sliver. The break says how long it really is.

/// A stretch with nothing running longer than this share of the whole run is collapsed.
const COLLAPSE_OVER: f64 = 0.10;
/// The width of one collapsed stretch, in % of the track.
const COLLAPSED_WIDTH: f64 = 6.0;
/// The most of the track that collapsed stretches take together, in %.
const COLLAPSED_AT_MOST: f64 = 40.0;

/// A stretch of the axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    /// Where it starts on the track, in %.
    pub(crate) left: f64,
    /// How wide it is drawn, in %.
    pub(crate) width: f64,
    /// Drawn shorter than it lasted.
    pub(crate) collapsed: bool,
}

/// Time → % of the track.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    pub(crate) pieces: Vec<Piece>,
}

impl Axis {
    /// The axis over `spans` (start, end, busy): a stretch covered by no busy span and
    /// longer than [`COLLAPSE_OVER`] of the whole is collapsed.
    pub(crate) fn new(spans: &[(u64, u64, bool)]) -> Axis {
        let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.1).max().unwrap_or(start).max(start);
        let whole = end - start;
        let mut edges: Vec<u64> = spans.iter().flat_map(|s| [s.0, s.1]).collect();
        edges.push(start);
        edges.push(end);
        edges.sort_unstable();
        edges.dedup();
        // Busy or idle stretches, neighbours of the same kind joined.
        let mut busy_or_idle: Vec<(u64, u64, bool)> = Vec::new();
        for pair in edges.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let busy = spans.iter().any(|&(s, e, busy)| busy && s < to && e > from);
            match busy_or_idle.last_mut() {
                Some(last) if last.2 == busy => last.1 = to,
                _ => busy_or_idle.push((from, to, busy)),
            }
        }
        // Long idle stretches collapsed; the others joined into linear pieces.
        let mut stretches: Vec<(u64, u64, bool)> = Vec::new();
        for (from, to, busy) in busy_or_idle {
            let collapse = !busy && (to - from) as f64 > whole as f64 * COLLAPSE_OVER;
            match stretches.last_mut() {
                Some(last) if !last.2 && !collapse => last.1 = to,
                _ => stretches.push((from, to, collapse)),
            }
        }
        if stretches.is_empty() {
            stretches.push((start, end, false));
        }
        let collapsed = stretches.iter().filter(|s| s.2).count();
        let kept_ms: u64 = stretches.iter().filter(|s| !s.2).map(|s| s.1 - s.0).sum();
        let gap_width = if collapsed == 0 {
            0.0
        } else if kept_ms == 0 {
            100.0 / collapsed as f64
        } else {
            COLLAPSED_WIDTH.min(COLLAPSED_AT_MOST / collapsed as f64)
        };
        let kept_share = 100.0 - gap_width * collapsed as f64;
        let mut left = 0.0;
        let pieces = stretches
            .into_iter()
            .map(|(start_ms, end_ms, collapsed)| {
                let width = if collapsed {
                    gap_width
                } else if kept_ms == 0 {
                    0.0
                } else {
                    (end_ms - start_ms) as f64 / kept_ms as f64 * kept_share
                };
                let piece = Piece {
                    start_ms,
                    end_ms,
                    left,
                    width,
                    collapsed,
                };
                left += width;
                piece
            })
            .collect();
        Axis { pieces }
    }

    /// Where `at_ms` falls on the track, in %.
    pub(crate) fn position(&self, at_ms: u64) -> f64 {
        for piece in &self.pieces {
            if at_ms <= piece.end_ms {
                let length = piece.end_ms.saturating_sub(piece.start_ms).max(1) as f64;
                let into = at_ms.saturating_sub(piece.start_ms) as f64 / length;
                return piece.left + into.min(1.0) * piece.width;
            }
        }
        100.0
    }

    /// The collapsed stretches.
    pub(crate) fn breaks(&self) -> impl Iterator<Item = &Piece> {
        self.pieces.iter().filter(|p| p.collapsed)
    }

    /// Whether `start..end` crosses a collapsed stretch.
    pub(crate) fn crosses_break(&self, start_ms: u64, end_ms: u64) -> bool {
        self.breaks()
            .any(|p| start_ms < p.end_ms && end_ms > p.start_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_of_hours_leaves_the_attempts_visible() {
        let hour = 3_600_000;
        // An attempt of 100 ms that sleeps two hours, then one of 100 ms.
        let spans = [
            (0, 100, true),
            (100, 100 + 2 * hour, false),
            (100 + 2 * hour, 200 + 2 * hour, true),
        ];
        let axis = Axis::new(&spans);
        let breaks: Vec<&Piece> = axis.breaks().collect();
        assert_eq!(breaks.len(), 1);
        assert_eq!(breaks[0].end_ms - breaks[0].start_ms, 2 * hour);
        let first = axis.position(100) - axis.position(0);
        let second = axis.position(200 + 2 * hour) - axis.position(100 + 2 * hour);
        assert!(first > 40.0 && second > 40.0, "{first} {second}");
        assert!((axis.position(200 + 2 * hour) - 100.0).abs() < 1e-9);
        assert!(axis.crosses_break(100, 100 + 2 * hour));
        assert!(!axis.crosses_break(0, 100));
    }

    #[test]
    fn short_gaps_stay_linear() {
        let spans = [(0, 100, true), (100, 105, false), (105, 200, true)];
        let axis = Axis::new(&spans);
        assert_eq!(axis.breaks().count(), 0);
        assert!((axis.position(100) - 50.0).abs() < 1e-9);
    }
}
