//! Whether a finding that would open a new alert is kept quiet by an engineer's
//! suppression (made when dismissing an earlier alert: see
//! [`leakwatch_core::suppression`]). Pure: the detection service loads the
//! suppressions that cover the finding and applies the verdict in one transaction
//! with the alert it raises (or the count it adds).

use leakwatch_core::{Finding, Suppression, SuppressionScope, Verdict};

/// Whether `s` covers `f`: same kind, and `f`'s meter (meter scope) or district
/// (district scope, any subject in it).
pub fn covers(s: &Suppression, f: &Finding) -> bool {
    s.kind == f.kind
        && match &s.scope {
            SuppressionScope::Meter(m) => f.meter_id.as_ref() == Some(m),
            SuppressionScope::District(d) => f.district_id.as_ref() == Some(d),
        }
}

/// Whether `s` still holds at the finding's event time: not ended (revoked or broken
/// through) and not past its `until`.
pub fn holds(s: &Suppression, f: &Finding) -> bool {
    s.is_active() && s.until.is_none_or(|u| f.detected_at < u)
}

/// The verdict on `f` (which would open a new alert) given the suppressions in
/// `active`. A finding whose observed value exceeds a holding suppression's dismissed
/// value by more than its margin breaks through (the first such suppression, by id,
/// is named); otherwise any holding suppression keeps it quiet; otherwise it raises.
pub fn judge(active: &[Suppression], f: &Finding) -> Verdict {
    let mut holding: Vec<&Suppression> = active
        .iter()
        .filter(|s| covers(s, f) && holds(s, f))
        .collect();
    holding.sort_by_key(|s| s.id);
    let observed = f.evidence.observed;
    if let Some(s) = holding
        .iter()
        .find(|s| observed.is_finite() && observed > s.break_above())
    {
        return Verdict::BreaksThrough {
            id: s.id,
            reason: format!(
                "new evidence {observed:.3} {} exceeds the dismissed {:.3} {} by more than {:.0} %",
                f.evidence.unit,
                s.observed,
                s.unit,
                s.margin * 100.0
            ),
        };
    }
    match holding.first() {
        Some(s) => Verdict::Suppressed { id: s.id },
        None => Verdict::Raise,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone, Utc};
    use leakwatch_core::{AlertKind, DistrictId, Evidence, MeterId, Severity, Timestamp};

    fn t(h: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h)
    }

    fn finding(kind: AlertKind, meter: &str, h: i64, observed: f64) -> Finding {
        Finding {
            kind,
            severity: Severity::Warning,
            meter_id: Some(MeterId::parse(meter).unwrap()),
            district_id: Some(DistrictId::parse("D1").unwrap()),
            detected_at: t(h),
            evidence: Evidence {
                rule: "r".into(),
                observed,
                expected: None,
                threshold: 0.01,
                unit: "m3/h".into(),
                window_start: t(h - 24),
                window_end: t(h),
                explanation: "x".into(),
                known: None,
            },
        }
    }

    fn suppression(id: i64, scope: SuppressionScope, until: Option<i64>) -> Suppression {
        Suppression {
            id,
            kind: AlertKind::ContinuousFlow,
            scope,
            alert_id: 1,
            reason: "pilot light".into(),
            created_by: "eng".into(),
            created_at: t(0),
            until: until.map(t),
            observed: 0.04,
            unit: "m3/h".into(),
            margin: 0.25,
            suppressed: 0,
            last_suppressed_at: None,
            ended_at: None,
            ended_by: None,
            end_reason: None,
            broken_by_alert: None,
        }
    }

    fn meter(m: &str) -> SuppressionScope {
        SuppressionScope::Meter(MeterId::parse(m).unwrap())
    }

    #[test]
    fn a_suppression_keeps_its_kind_on_its_meter_quiet() {
        let s = [suppression(7, meter("M1"), None)];
        let cf = AlertKind::ContinuousFlow;
        assert_eq!(
            judge(&s, &finding(cf, "M1", 5, 0.04)),
            Verdict::Suppressed { id: 7 }
        );
        // Within the margin: still quiet.
        assert_eq!(
            judge(&s, &finding(cf, "M1", 5, 0.049)),
            Verdict::Suppressed { id: 7 }
        );
        // Another meter, another kind: not covered.
        assert_eq!(judge(&s, &finding(cf, "M2", 5, 0.04)), Verdict::Raise);
        assert_eq!(
            judge(&s, &finding(AlertKind::NightFlowRise, "M1", 5, 0.04)),
            Verdict::Raise
        );
    }

    #[test]
    fn evidence_beyond_the_margin_breaks_through() {
        let s = [suppression(7, meter("M1"), None)];
        let v = judge(&s, &finding(AlertKind::ContinuousFlow, "M1", 5, 0.051));
        let Verdict::BreaksThrough { id, reason } = v else {
            panic!("{v:?}")
        };
        assert_eq!(id, 7);
        assert!(
            reason.contains("0.051") && reason.contains("25 %"),
            "{reason}"
        );
    }

    #[test]
    fn a_suppression_lapses_at_its_date_and_when_ended() {
        let cf = AlertKind::ContinuousFlow;
        let s = [suppression(7, meter("M1"), Some(10))];
        assert_eq!(
            judge(&s, &finding(cf, "M1", 9, 0.04)),
            Verdict::Suppressed { id: 7 }
        );
        assert_eq!(judge(&s, &finding(cf, "M1", 10, 0.04)), Verdict::Raise);
        let mut ended = suppression(7, meter("M1"), None);
        ended.ended_at = Some(t(1));
        assert_eq!(judge(&[ended], &finding(cf, "M1", 5, 0.04)), Verdict::Raise);
    }

    #[test]
    fn a_district_suppression_covers_every_meter_of_the_district() {
        let cf = AlertKind::ContinuousFlow;
        let s = [suppression(
            3,
            SuppressionScope::District(DistrictId::parse("D1").unwrap()),
            None,
        )];
        assert_eq!(
            judge(&s, &finding(cf, "M9", 5, 0.01)),
            Verdict::Suppressed { id: 3 }
        );
        let mut elsewhere = finding(cf, "M9", 5, 0.01);
        elsewhere.district_id = Some(DistrictId::parse("D2").unwrap());
        assert_eq!(judge(&s, &elsewhere), Verdict::Raise);
    }
}
