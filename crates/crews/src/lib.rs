//! The crews' side of MQTT: the channel that sends every new or changed job to the
//! crew's phone and stores the positions phones report ([`channel`]), and the demo's
//! simulated crews ([`bot`]). Both speak through one `leakwatch_mqtt::Session`; the
//! messages are `leakwatch_wire::crew`'s. The rules (who gets which job, what a
//! transition may do) are the dispatcher's; this crate only carries messages.

pub mod bot;
pub mod channel;

pub use channel::{CrewChannelConfig, run};
