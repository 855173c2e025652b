//! The benchmark scenarios. Each returns one JSON object; the closed-loop ones share
//! [`ClosedLoop`] for their connection, concurrency and timing settings.

pub mod coldstart;
pub mod converse;
pub mod history;
pub mod idle;
pub mod stream;
pub mod unary;

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::load::LoadPlan;

/// Connections, concurrency and timing of a closed-loop scenario.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    /// Server address (loopback).
    pub addr: SocketAddr,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Outstanding requests (or streams) per connection.
    pub in_flight: usize,
    /// Warm-up, window and request bound.
    pub plan: LoadPlan,
}

impl ClosedLoop {
    /// Workers in all: `connections × in_flight`.
    pub fn workers(&self) -> usize {
        self.connections * self.in_flight
    }

    /// The settings as JSON, for the results file.
    pub fn to_json(&self) -> Value {
        json!({
            "addr": self.addr.to_string(),
            "connections": self.connections,
            "in_flight": self.in_flight,
            "warmup_s": self.plan.warmup.as_secs_f64(),
            "duration_s": self.plan.duration.as_secs_f64(),
            "max_requests": self.plan.max_requests,
        })
    }
}

/// Refuses addresses off this machine: the harness loads loopback servers only.
pub fn check_loopback(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "{addr} is not a loopback address: the load generator only targets servers on this machine (127.0.0.0/8 or ::1)"
        ))
    }
}

/// The gRPC status code of a `TurnError` event, as a `tonic::Code`.
pub fn code_of(number: i32) -> tonic::Code {
    tonic::Code::from_i32(number)
}
