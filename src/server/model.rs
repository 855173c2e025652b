//! `contextd.v1.ModelService`: the models sessions may name, with their context windows.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::convert::{backend_to_wire, model_to_wire};
use crate::api::v1::{self, model_service_server::ModelService};
use crate::engine::Engine;

/// Implements `ModelService` over the engine.
pub struct ModelApi {
    engine: Arc<Engine>,
}

impl ModelApi {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl ModelService for ModelApi {
    async fn list_models(
        &self,
        _request: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        let default_model = self.engine.default_model().to_string();
        Ok(Response::new(v1::ListModelsResponse {
            models: self
                .engine
                .models()
                .iter()
                .map(|m| model_to_wire(m, &default_model))
                .collect(),
            backends: self.engine.backends().iter().map(backend_to_wire).collect(),
            default_model,
        }))
    }
}
