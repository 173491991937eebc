//! Routing a survey crew along its segments: in which order, and in which direction,
//! to walk (or drive) a set of street segments so that the distance covered between
//! them (deadhead: from the end of one segment to the start of the next) is short.
//!
//! A segment can be surveyed in either direction, so the route is a sequence of
//! (segment, direction). [`route`] builds it in three steps:
//!
//! 1. nearest-endpoint chaining: from a start (the crew's, or each segment's end in
//!    turn), go to the unvisited segment end nearest to where the crew is, walk that
//!    segment to its other end, repeat; the best of all starts is kept;
//! 2. 2-opt and or-opt moves on the order (reverse a stretch of the route; move one
//!    segment elsewhere), each evaluated with the best directions for that order
//!    ([`orient`]: an exact dynamic programme over the two directions of each segment);
//! 3. until no move shortens the route.
//!
//! Distances between segments are straight lines (great-circle), a lower bound of the
//! street distance: on a street grid the two agree when segments share junctions, which
//! is what the chaining favours. [`nearest_midpoint_order`] is the order planned before
//! (nearest next by the segments' midpoints, directions as stored), kept to measure
//! against (`leakwatch sim survey` prints both).
//!
//! [`cut_orders`] groups a day's visits by district, routes each district and cuts the
//! route into work orders of at most `max_m` metres, each routed again on its own.

use crate::network::Segment;
use crate::program::Visit;
use leakwatch_core::{DistrictId, GeoPoint};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One segment of a route, in the direction walked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leg {
    pub segment: String,
    /// Walked from its last point to its first.
    pub reversed: bool,
}

/// A crew's way along its segments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub legs: Vec<Leg>,
    /// Length of the segments (what is surveyed).
    pub survey_m: f64,
    /// Distance between them (from the start, if one was given, to the first segment,
    /// then from each segment's end to the next one's start).
    pub deadhead_m: f64,
}

impl Route {
    pub fn total_m(&self) -> f64 {
        self.survey_m + self.deadhead_m
    }
}

fn dist_m(a: &GeoPoint, b: &GeoPoint) -> f64 {
    a.distance_km(b) * 1000.0
}

/// (start, end) of a segment walked in direction `rev`.
fn ends(s: &Segment, rev: bool) -> (GeoPoint, GeoPoint) {
    let a = s.geometry[0];
    let b = *s.geometry.last().unwrap_or(&a);
    if rev { (b, a) } else { (a, b) }
}

/// The best directions for segments walked in `order` from `start` (if any): the
/// directions and the deadhead. Exact (a dynamic programme over the two directions).
pub fn orient(segs: &[&Segment], order: &[usize], start: Option<GeoPoint>) -> (Vec<bool>, f64) {
    if order.is_empty() {
        return (Vec::new(), 0.0);
    }
    // cost[d]: least deadhead to have walked order[..=k] ending with direction d.
    let first = segs[order[0]];
    let mut cost = [false, true].map(|rev| start.map_or(0.0, |p| dist_m(&p, &ends(first, rev).0)));
    let mut back: Vec<[bool; 2]> = vec![[false, false]];
    for k in 1..order.len() {
        let (prev, cur) = (segs[order[k - 1]], segs[order[k]]);
        let mut next = [f64::INFINITY; 2];
        let mut from = [false; 2];
        for (di, rev) in [false, true].into_iter().enumerate() {
            let here = ends(cur, rev).0;
            for (pi, prev_rev) in [false, true].into_iter().enumerate() {
                let c = cost[pi] + dist_m(&ends(prev, prev_rev).1, &here);
                if c < next[di] {
                    next[di] = c;
                    from[di] = prev_rev;
                }
            }
        }
        cost = next;
        back.push(from);
    }
    let mut rev = cost[1] < cost[0];
    let best = cost[usize::from(rev)];
    let mut dirs = vec![false; order.len()];
    for k in (0..order.len()).rev() {
        dirs[k] = rev;
        rev = back[k][usize::from(rev)];
    }
    (dirs, best)
}

/// Deadhead of walking `order` with each segment in its stored direction.
pub fn deadhead_as_stored(segs: &[&Segment], order: &[usize]) -> f64 {
    order
        .windows(2)
        .map(|w| dist_m(&ends(segs[w[0]], false).1, &ends(segs[w[1]], false).0))
        .sum()
}

/// The order planned before: nearest next by midpoint, from the first segment given.
pub fn nearest_midpoint_order(segs: &[&Segment]) -> Vec<usize> {
    let mut left: Vec<usize> = (0..segs.len()).collect();
    let mut out = Vec::with_capacity(segs.len());
    if left.is_empty() {
        return out;
    }
    out.push(left.remove(0));
    while !left.is_empty() {
        let here = segs[*out.last().expect("not empty")].midpoint();
        let (i, _) = left
            .iter()
            .enumerate()
            .map(|(i, &s)| (i, segs[s].midpoint().distance_km(&here)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        out.push(left.remove(i));
    }
    out
}

/// Greedy chaining from segment `first` walked in direction `rev`.
fn chain(segs: &[&Segment], first: usize, rev: bool) -> Vec<usize> {
    let mut left: Vec<usize> = (0..segs.len()).filter(|&i| i != first).collect();
    let mut out = vec![first];
    let mut at = ends(segs[first], rev).1;
    while !left.is_empty() {
        let mut best = (0, false, f64::INFINITY);
        for (k, &i) in left.iter().enumerate() {
            for r in [false, true] {
                let d = dist_m(&at, &ends(segs[i], r).0);
                if d < best.2 {
                    best = (k, r, d);
                }
            }
        }
        let i = left.remove(best.0);
        at = ends(segs[i], best.1).1;
        out.push(i);
    }
    out
}

/// The route over `segs` (see the module doc), from `start` if given.
pub fn route(segs: &[&Segment], start: Option<GeoPoint>) -> Route {
    let n = segs.len();
    let survey_m: f64 = segs.iter().map(|s| s.length_m()).sum();
    if n == 0 {
        return Route {
            legs: Vec::new(),
            survey_m,
            deadhead_m: 0.0,
        };
    }
    let cost = |o: &[usize]| orient(segs, o, start).1;
    // 1. The best greedy chain over every start.
    let mut best: Vec<usize> = Vec::new();
    let mut best_c = f64::INFINITY;
    for first in 0..n {
        for rev in [false, true] {
            let o = chain(segs, first, rev);
            let c = cost(&o);
            if c < best_c - 1e-9 {
                best_c = c;
                best = o;
            }
        }
    }
    // 2. 2-opt (reverse order[i..=j]) and or-opt (move one segment), first improvement,
    //    until none improves. Bounded: each pass must shorten the route.
    let mut improved = true;
    let mut passes = 0;
    while improved && passes < 50 {
        improved = false;
        passes += 1;
        for i in 0..n {
            for j in i + 1..n {
                let mut o = best.clone();
                o[i..=j].reverse();
                let c = cost(&o);
                if c < best_c - 1e-6 {
                    best = o;
                    best_c = c;
                    improved = true;
                }
            }
        }
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let mut o = best.clone();
                let s = o.remove(i);
                o.insert(j, s);
                let c = cost(&o);
                if c < best_c - 1e-6 {
                    best = o;
                    best_c = c;
                    improved = true;
                }
            }
        }
    }
    let (dirs, deadhead_m) = orient(segs, &best, start);
    Route {
        legs: best
            .iter()
            .zip(dirs)
            .map(|(&i, reversed)| Leg {
                segment: segs[i].id.clone(),
                reversed,
            })
            .collect(),
        survey_m,
        deadhead_m,
    }
}

/// A survey work order to create: one district, its route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderPlan {
    pub district: DistrictId,
    pub route: Route,
}

/// The day's visits as work orders: by district, each district routed ([`route`]) and
/// cut along the route into orders of at most `max_m` metres of segment (a segment
/// longer than that is an order of its own), each order routed again.
pub fn cut_orders(visits: &[Visit], segs: &HashMap<&str, &Segment>, max_m: f64) -> Vec<OrderPlan> {
    let mut by_district: BTreeMap<String, Vec<&Segment>> = BTreeMap::new();
    for v in visits {
        if let Some(s) = segs.get(v.segment.as_str()) {
            let list = by_district
                .entry(s.district.as_str().to_owned())
                .or_default();
            if !list.iter().any(|x| x.id == s.id) {
                list.push(s);
            }
        }
    }
    let mut out = Vec::new();
    for list in by_district.into_values() {
        let whole = route(&list, None);
        let index: HashMap<&str, &Segment> = list.iter().map(|s| (s.id.as_str(), *s)).collect();
        let mut piece: Vec<&Segment> = Vec::new();
        let mut m = 0.0;
        let mut flush = |piece: &mut Vec<&Segment>| {
            if let Some(first) = piece.first() {
                out.push(OrderPlan {
                    district: first.district.clone(),
                    route: route(piece, None),
                });
            }
            piece.clear();
        };
        for leg in &whole.legs {
            let s = index[leg.segment.as_str()];
            if !piece.is_empty() && m + s.length_m() > max_m + 1e-6 {
                flush(&mut piece);
                m = 0.0;
            }
            m += s.length_m();
            piece.push(s);
        }
        flush(&mut piece);
    }
    out
}

/// The orders planned before this module (nearest next by midpoint, cut at `max_m`,
/// directions as stored), with their deadhead: (as stored, with the best directions).
pub fn midpoint_orders_deadhead(
    visits: &[Visit],
    segs: &HashMap<&str, &Segment>,
    max_m: f64,
) -> (f64, f64) {
    let mut by_district: BTreeMap<String, Vec<&Segment>> = BTreeMap::new();
    for v in visits {
        if let Some(s) = segs.get(v.segment.as_str()) {
            let list = by_district
                .entry(s.district.as_str().to_owned())
                .or_default();
            if !list.iter().any(|x| x.id == s.id) {
                list.push(s);
            }
        }
    }
    let (mut stored, mut oriented) = (0.0, 0.0);
    for list in by_district.into_values() {
        let order = nearest_midpoint_order(&list);
        let mut piece: Vec<usize> = Vec::new();
        let mut m = 0.0;
        let mut flush = |piece: &mut Vec<usize>| {
            stored += deadhead_as_stored(&list, piece);
            oriented += orient(&list, piece, None).1;
            piece.clear();
        };
        for i in order {
            if !piece.is_empty() && m + list[i].length_m() > max_m + 1e-6 {
                flush(&mut piece);
                m = 0.0;
            }
            m += list[i].length_m();
            piece.push(i);
        }
        flush(&mut piece);
    }
    (stored, oriented)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Material;
    use chrono::NaiveDate;

    /// A segment between two points given in metres east/north of an origin.
    fn seg(id: &str, a: (f64, f64), b: (f64, f64)) -> Segment {
        let o = GeoPoint::new(45.0, 9.0).unwrap();
        let p = |(e, n): (f64, f64)| o.offset_km(n / 1000.0, e / 1000.0);
        Segment {
            id: id.into(),
            district: DistrictId::parse("D").unwrap(),
            geometry: vec![p(a), p(b)],
            pressure_class: "it_bp".into(),
            material: Material::Steel,
            diameter_mm: 100,
            year_laid: 1990,
            added_on: NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
        }
    }

    #[test]
    fn orientation_is_exact_and_a_street_is_walked_end_to_end() {
        // Three blocks of one street, stored alternately reversed: walked in a line
        // the deadhead is zero, as stored it is two blocks' back-and-forth.
        let s = [
            seg("a", (0.0, 0.0), (200.0, 0.0)),
            seg("b", (400.0, 0.0), (200.0, 0.0)),
            seg("c", (400.0, 0.0), (600.0, 0.0)),
        ];
        let refs: Vec<&Segment> = s.iter().collect();
        let (dirs, dh) = orient(&refs, &[0, 1, 2], None);
        assert_eq!(dirs, vec![false, true, false]);
        assert!(dh < 1.0, "{dh}");
        assert!((deadhead_as_stored(&refs, &[0, 1, 2]) - 400.0).abs() < 5.0);
        let r = route(&refs, None);
        assert!(r.deadhead_m < 1.0, "{r:?}");
        assert!((r.survey_m - 600.0).abs() < 5.0);
    }

    #[test]
    fn a_grid_is_covered_with_less_deadhead_than_nearest_midpoint() {
        // A 4 x 4 street grid of 100 m blocks (24 segments), given in a scrambled order.
        let mut s = Vec::new();
        for i in 0..4 {
            for j in 0..3 {
                let (y, x) = (f64::from(i) * 100.0, f64::from(j) * 100.0);
                s.push(seg(&format!("E{i}{j}"), (x, y), (x + 100.0, y)));
                s.push(seg(&format!("N{i}{j}"), (y, x), (y, x + 100.0)));
            }
        }
        let mut refs: Vec<&Segment> = s.iter().collect();
        // A deterministic scramble.
        let n = refs.len();
        for k in 0..n {
            refs.swap(k, (k * 7 + 3) % n);
        }
        let r = route(&refs, None);
        assert_eq!(r.legs.len(), n);
        let mut ids: Vec<&str> = r.legs.iter().map(|l| l.segment.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "every segment once");
        let old = nearest_midpoint_order(&refs);
        let old_stored = deadhead_as_stored(&refs, &old);
        let old_best = orient(&refs, &old, None).1;
        assert!(old_best <= old_stored + 1e-6);
        assert!(
            r.deadhead_m < old_best,
            "new {} vs old {old_best} (as stored {old_stored})",
            r.deadhead_m
        );
        // A grid with four odd corners... every junction of degree 3 on the rim forces
        // some deadhead, but never more than a few blocks.
        assert!(r.deadhead_m <= 800.0, "{}", r.deadhead_m);
    }

    #[test]
    fn orders_are_cut_by_length_within_a_district() {
        let s: Vec<Segment> = (0..10)
            .map(|k| {
                let x = f64::from(k) * 200.0;
                seg(&format!("S{k}"), (x, 0.0), (x + 200.0, 0.0))
            })
            .collect();
        let map: HashMap<&str, &Segment> = s.iter().map(|x| (x.id.as_str(), x)).collect();
        let visits: Vec<Visit> = s
            .iter()
            .rev()
            .map(|x| Visit {
                date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                segment: x.id.clone(),
                length_m: x.length_m(),
                reason: crate::program::Reason::Risk { score: 1.0 },
            })
            .collect();
        let orders = cut_orders(&visits, &map, 700.0);
        assert_eq!(orders.len(), 4, "{orders:?}");
        assert!(orders.iter().all(|o| o.route.survey_m <= 700.0 + 1.0));
        let total: usize = orders.iter().map(|o| o.route.legs.len()).sum();
        assert_eq!(total, 10);
        // Each order is a stretch of the street: no deadhead.
        assert!(
            orders.iter().all(|o| o.route.deadhead_m < 1.0),
            "{orders:?}"
        );
    }
}
