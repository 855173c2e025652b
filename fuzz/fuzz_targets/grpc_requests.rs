//! Every request message of the contract, decoded from arbitrary bytes and sent to a real
//! server through the generated gRPC clients.
//!
//! Input: one selector byte (which RPC) and the request's protobuf bytes. Bytes prost cannot
//! decode are skipped (the server would never see them from a real client). Whatever is sent
//! must get a clear status (never UNKNOWN or INTERNAL, never a source path), within a bound.
#![no_main]

use contextd::api::v1::admin_service_client::AdminServiceClient;
use contextd::api::v1::interact_service_client::InteractServiceClient;
use contextd::api::v1::model_service_client::ModelServiceClient;
use contextd::api::v1::session_service_client::SessionServiceClient;
use contextd::api::v1::tool_service_client::ToolServiceClient;
use contextd::api::v1::*;
use contextd_fuzz::{answered, check_status, server};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::transport::Channel;

/// Decodes `bytes` as `$message` and awaits the unary `$client.$rpc`, checking its status.
macro_rules! unary {
    ($client:ident, $rpc:ident, $message:ty, $channel:expr, $bytes:expr) => {{
        let Ok(request) = <$message>::decode($bytes) else {
            return;
        };
        let reply = answered(stringify!($rpc), $client::new($channel).$rpc(request)).await;
        if let Err(status) = reply {
            check_status(stringify!($rpc), &status);
        }
    }};
}

/// The same for a server-streaming RPC: the stream is read to its end.
macro_rules! streaming {
    ($client:ident, $rpc:ident, $message:ty, $channel:expr, $bytes:expr) => {{
        let Ok(request) = <$message>::decode($bytes) else {
            return;
        };
        let read = async {
            let mut stream = $client::new($channel).$rpc(request).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        };
        if let Err(status) = answered(stringify!($rpc), read).await {
            check_status(stringify!($rpc), &status);
        }
    }};
}

async fn send(channel: Channel, selector: u8, bytes: &[u8]) {
    match selector % 19 {
        0 => unary!(
            SessionServiceClient,
            create_session,
            CreateSessionRequest,
            channel,
            bytes
        ),
        1 => unary!(
            SessionServiceClient,
            get_session,
            GetSessionRequest,
            channel,
            bytes
        ),
        2 => unary!(
            SessionServiceClient,
            list_sessions,
            ListSessionsRequest,
            channel,
            bytes
        ),
        3 => unary!(
            SessionServiceClient,
            update_session,
            UpdateSessionRequest,
            channel,
            bytes
        ),
        4 => unary!(
            SessionServiceClient,
            delete_session,
            DeleteSessionRequest,
            channel,
            bytes
        ),
        5 => unary!(
            SessionServiceClient,
            list_messages,
            ListMessagesRequest,
            channel,
            bytes
        ),
        6 => unary!(
            SessionServiceClient,
            preview_context,
            PreviewContextRequest,
            channel,
            bytes
        ),
        7 => unary!(
            InteractServiceClient,
            interact,
            InteractRequest,
            channel,
            bytes
        ),
        8 => streaming!(
            InteractServiceClient,
            stream_response,
            StreamResponseRequest,
            channel,
            bytes
        ),
        9 => unary!(
            ToolServiceClient,
            list_tools,
            ListToolsRequest,
            channel,
            bytes
        ),
        10 => unary!(
            ToolServiceClient,
            call_tool,
            CallToolRequest,
            channel,
            bytes
        ),
        11 => unary!(
            ModelServiceClient,
            list_models,
            ListModelsRequest,
            channel,
            bytes
        ),
        12 => unary!(
            AdminServiceClient,
            create_key,
            CreateKeyRequest,
            channel,
            bytes
        ),
        13 => unary!(
            AdminServiceClient,
            list_keys,
            ListKeysRequest,
            channel,
            bytes
        ),
        14 => unary!(
            AdminServiceClient,
            revoke_key,
            RevokeKeyRequest,
            channel,
            bytes
        ),
        15 => unary!(
            AdminServiceClient,
            list_tenants,
            ListTenantsRequest,
            channel,
            bytes
        ),
        16 => streaming!(
            AdminServiceClient,
            export_tenant,
            ExportTenantRequest,
            channel,
            bytes
        ),
        17 => unary!(
            AdminServiceClient,
            delete_tenant,
            DeleteTenantRequest,
            channel,
            bytes
        ),
        // Interact once more: the turn is what most of the engine is about.
        _ => unary!(
            InteractServiceClient,
            interact,
            InteractRequest,
            channel,
            bytes
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let server = server();
    server
        .runtime
        .block_on(send(server.channel.clone(), selector, bytes));
});
