//! End-to-end tests: the whole service in-process, over real MQTT sockets and a real
//! database. Each flow runs twice: embedded broker + SQLite, and Mosquitto +
//! PostgreSQL (`LEAKWATCH_TEST_MQTT`, `LEAKWATCH_TEST_PG`; `.ci/run` sets both, and
//! with `CI` set a missing one fails the test instead of skipping it).

mod api;
mod auth;
mod corpus;
mod deploy;
mod detection;
mod devices;
mod dispatch;
mod durability;
mod edges;
mod escalation;
mod flow;
mod ingest;
mod lifecycle;
mod oversize;
// Scale-out (issue 14): bridges, workers and a nats-server cluster under faults.
mod scaleout;
// The scaled-out processes over NATS TLS, stopped by SIGTERM (issue 15).
mod scaled_lifecycle;
mod support;
mod survey;
// Dismissals that stick (issue 12).
mod suppress;
