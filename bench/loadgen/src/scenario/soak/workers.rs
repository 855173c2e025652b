//! The soak's workers: one per kind of operation, each on a session it replaces every
//! [`TURNS_PER_SESSION`] turns, usable both in the load generator's closed loop (the capacity
//! phase) and in the soak's paced loop.

use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::stream_response_response::Event;
use contextd::api::v1::{
    CreateSessionRequest, DeleteSessionRequest, FinishReason, GetSessionRequest,
    StreamResponseRequest,
};
use tonic::transport::Channel;

use super::{Kind, TURNS_PER_SESSION};
use crate::load::{Failure, OpResult, Worker};
use crate::scenario::converse::ConverseWorker;
use crate::scenario::unary;
use crate::workload;

/// A worker of one kind, usable in the closed loop (capacity) and the paced loop (soak).
pub enum SoakWorker {
    /// `Interact` turns on a session that changes every [`TURNS_PER_SESSION`] turns.
    Unary(Rotating),
    /// `StreamResponse` turns, likewise.
    Stream(Rotating),
    /// A `Converse` stream, reopened on a fresh session every [`TURNS_PER_SESSION`] turns.
    Converse {
        /// Its session and turn count.
        session: Rotating,
        /// The open stream (boxed: it is far larger than the other variants).
        stream: Box<ConverseWorker>,
    },
    /// Session churn: every operation makes and deletes a session of its own.
    Churn(Rotating),
}

/// A worker's current session and how many turns it has made on it.
pub struct Rotating {
    channel: Channel,
    prefix: String,
    generation: u64,
    turns: u64,
}

impl Rotating {
    fn new(channel: Channel, tag: &str, kind: Kind, worker: usize) -> Self {
        Self {
            channel,
            prefix: format!("soak-{tag}-{}{worker:03}", kind.name()),
            generation: 0,
            turns: 0,
        }
    }

    fn session_id(&self) -> String {
        format!("{}-{:06}", self.prefix, self.generation)
    }

    /// Moves to a fresh session when this one has had its turns; returns the old one's id.
    fn rotate(&mut self) -> Option<String> {
        if self.turns < TURNS_PER_SESSION {
            return None;
        }
        let old = self.session_id();
        self.generation += 1;
        self.turns = 0;
        Some(old)
    }

    fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }

    async fn delete(&self, session_id: String) -> Result<(), Failure> {
        self.sessions()
            .delete_session(workload::authorized(DeleteSessionRequest {
                session_id,
                etag: String::new(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| s.code().into())
    }
}

impl SoakWorker {
    /// Opens a worker of `kind` (a `Converse` worker opens its stream now).
    pub async fn open(
        kind: Kind,
        channel: Channel,
        tag: &str,
        worker: usize,
    ) -> Result<Self, String> {
        let session = Rotating::new(channel.clone(), tag, kind, worker);
        Ok(match kind {
            Kind::Unary => Self::Unary(session),
            Kind::Stream => Self::Stream(session),
            Kind::Converse => {
                let stream = Box::new(ConverseWorker::open(channel, session.session_id()).await?);
                Self::Converse { session, stream }
            }
            Kind::Churn => Self::Churn(session),
        })
    }

    /// Untimed upkeep before an operation: moving to a fresh session and deleting the old
    /// one. Returns whether it did anything (the operation then starts late, and its latency
    /// is counted from when it could start).
    pub async fn upkeep(&mut self) -> Result<bool, Failure> {
        match self {
            Self::Unary(session) | Self::Stream(session) => match session.rotate() {
                Some(old) => session.delete(old).await.map(|()| true),
                None => Ok(false),
            },
            Self::Converse { session, stream } => {
                let Some(old) = session.rotate() else {
                    return Ok(false);
                };
                // The new stream first: dropping the old one (by replacing it) ends it, and
                // the session can then be deleted with no stream attached.
                **stream = ConverseWorker::open(session.channel.clone(), session.session_id())
                    .await
                    .map_err(|_| Failure::Grpc(tonic::Code::Unavailable))?;
                session.delete(old).await.map(|()| true)
            }
            Self::Churn(_) => Ok(false),
        }
    }

    /// The timed operation.
    pub async fn operate(&mut self) -> OpResult {
        match self {
            Self::Unary(session) => {
                session.turns += 1;
                InteractServiceClient::new(session.channel.clone())
                    .interact(workload::authorized(unary::request_on(
                        &session.session_id(),
                    )))
                    .await
                    .map(|_| 1)
                    .map_err(|s| s.code().into())
            }
            Self::Stream(session) => {
                session.turns += 1;
                stream_turn(session.channel.clone(), session.session_id()).await
            }
            Self::Converse { session, stream } => {
                session.turns += 1;
                stream.run_once().await
            }
            Self::Churn(session) => {
                session.generation += 1;
                churn(session).await
            }
        }
    }
}

impl Worker for SoakWorker {
    async fn run_once(&mut self) -> OpResult {
        self.upkeep().await?;
        self.operate().await
    }
}

/// One `StreamResponse` turn; its units are the deltas received.
async fn stream_turn(channel: Channel, session_id: String) -> OpResult {
    let request = StreamResponseRequest {
        session_id,
        message: workload::stream_message(),
        context: None,
        tool_results: Vec::new(),
        idempotency_key: String::new(),
        abandon_tool_calls: false,
    };
    let mut events = InteractServiceClient::new(channel)
        .stream_response(workload::authorized(request))
        .await
        .map_err(|s| s.code())?
        .into_inner();
    let mut deltas = 0;
    while let Some(event) = events.message().await.map_err(|s| s.code())? {
        match event.event {
            Some(Event::Delta(_)) => deltas += 1,
            Some(Event::Completed(done)) if done.finish_reason == FinishReason::Stop as i32 => {
                return Ok(deltas);
            }
            Some(Event::Completed(_)) => return Err(Failure::BadReply),
            _ => {}
        }
    }
    // The stream ended without `completed`.
    Err(Failure::BadReply)
}

/// Creates a session, makes one turn on it, deletes it, and reads it back: the read must
/// answer NOT_FOUND, and anything else is an error.
async fn churn(session: &Rotating) -> OpResult {
    let session_id = session.session_id();
    let mut sessions = session.sessions();
    sessions
        .create_session(workload::authorized(CreateSessionRequest {
            session_id: session_id.clone(),
            ..Default::default()
        }))
        .await
        .map_err(|s| s.code())?;
    InteractServiceClient::new(session.channel.clone())
        .interact(workload::authorized(unary::request_on(&session_id)))
        .await
        .map_err(|s| s.code())?;
    session.delete(session_id.clone()).await?;
    match sessions
        .get_session(workload::authorized(GetSessionRequest { session_id }))
        .await
    {
        Err(status) if status.code() == tonic::Code::NotFound => Ok(1),
        Err(status) => Err(status.code().into()),
        // A deleted session that can still be read is a wrong answer, not a transport error.
        Ok(_) => Err(Failure::BadReply),
    }
}
