//! Domain types and rules of leakwatch: identifiers, meters, readings, alerts, crews and
//! the work-order lifecycle.
//!
//! This crate owns the vocabulary every other crate speaks. It must not touch I/O: no
//! tokio, no sqlx, no MQTT. Rules that decide something (may this work order move from
//! `assigned` to `on_site`?) live here as pure functions so they can be tested plainly.

pub mod account;
pub mod alert;
pub mod crew;
pub mod device;
pub mod geo;
pub mod ids;
pub mod leak_class;
pub mod limits;
pub mod mapping;
pub mod meter;
pub mod names;
pub mod reading;
pub mod shift;
pub mod site;
pub mod suppression;
pub mod workorder;

pub use account::Role;
pub use alert::{
    Alert, AlertAction, AlertKind, AlertStatus, Evidence, Finding, Known, Severity, Subject,
};
pub use crew::{Crew, CrewStatus, PositionError, PositionReport, PositionSource};
pub use geo::GeoPoint;
pub use ids::{CrewId, DistrictId, IdError, MeterId};
pub use leak_class::{DEFAULT_TO_BE_CHECKED, LeakClass, LeakClassTable};
pub use mapping::{EscalationMapping, EscalationRule, JobSpec};
pub use meter::{Meter, MeterKind, MeterRecord, MeterStatus};
pub use reading::{EventCode, MeterEvent, Reading, ReadingFlags};
pub use shift::{ShiftException, WeeklyShifts};
pub use site::{AlertOutcome, GasReading, SiteFinding};
pub use suppression::{NewSuppression, SuppressRequest, Suppression, SuppressionScope, Verdict};
pub use workorder::{
    DeadlineView, IllegalTransition, OrderAction, Priority, TransitionRecord, WorkOrder,
    WorkOrderKind, WorkOrderStatus,
};

/// Times are UTC everywhere inside leakwatch; offsets only exist at the wire.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
