//! `ceiling`: a bare tonic server for contextd's `InteractService` whose `Interact` returns
//! one fixed reply, the same size as contextd's echo reply to the benchmark's request. No
//! engine, no store, no layers: what any tonic service can do at most on this machine.
//!
//! It serves the health service too (so readiness is checked the same way) and prints
//! `ceiling listening on <addr>` on stdout once bound.

use std::pin::Pin;

use clap::Parser;
use contextd::api::v1::interact_service_server::{InteractService, InteractServiceServer};
use contextd::api::v1::{
    ConverseRequest, ConverseResponse, InteractRequest, InteractResponse, StreamResponseRequest,
    StreamResponseResponse,
};
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// The allocator contextd uses, so the ceiling stays the most a tonic service can do here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bare tonic server with a fixed unary reply (the benchmarks' ceiling).
#[derive(Parser, Debug)]
#[command(name = "ceiling", version, about)]
struct Cli {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

struct Ceiling {
    reply: InteractResponse,
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl InteractService for Ceiling {
    async fn interact(
        &self,
        _request: Request<InteractRequest>,
    ) -> Result<Response<InteractResponse>, Status> {
        Ok(Response::new(self.reply.clone()))
    }

    type StreamResponseStream = EventStream<StreamResponseResponse>;

    async fn stream_response(
        &self,
        _request: Request<StreamResponseRequest>,
    ) -> Result<Response<Self::StreamResponseStream>, Status> {
        Err(Status::unimplemented(
            "the ceiling server answers Interact only",
        ))
    }

    type ConverseStream = EventStream<ConverseResponse>;

    async fn converse(
        &self,
        _request: Request<Streaming<ConverseRequest>>,
    ) -> Result<Response<Self::ConverseStream>, Status> {
        Err(Status::unimplemented(
            "the ceiling server answers Interact only",
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    println!("ceiling listening on {}", listener.local_addr()?);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<InteractServiceServer<Ceiling>>().await;
    let service = InteractServiceServer::new(Ceiling {
        reply: loadgen::workload::ceiling_reply(),
    });
    // Accepted connections get TCP_NODELAY, as contextd's do (the builder's `tcp_nodelay`
    // applies only to listeners tonic binds itself).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
