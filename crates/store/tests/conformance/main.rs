//! The store's conformance suite: every case runs against a fresh SQLite file, a fresh
//! SQLite in-memory database and a fresh PostgreSQL database (made through the admin URL
//! in `LEAKWATCH_TEST_PG`; without it the PostgreSQL runs skip with a note, or fail when
//! `CI` is set), so both backends are held to the same behaviour. One module per
//! aggregate.

mod support;

mod accounts;
mod alerts;
mod dead_letters;
mod detector_state;
mod devices;
mod meters;
mod migrations;
mod network;
mod readings;
mod store;
mod work_orders;
