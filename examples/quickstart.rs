//! The same small program in every client: a session, a turn, a stream, a Converse turn with a
//! client-side tool, and an error. Usage: `cargo run --example quickstart -- [HOST:PORT]`.

use contextd::client::{
    Client, ConverseOptions, NewSession, StreamEvent, context_json, tool_definition,
};
use futures_util::StreamExt;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args().nth(1).unwrap_or("127.0.0.1:61900".into());
    let client = Client::connect(&target).await?;
    let sid = format!(
        "quickstart-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let weather = tool_definition("get_weather", "Current weather of a city", json!({}))?;
    let mut session = NewSession::new(&sid);
    session.tools = vec![weather];
    client.create_session(session).await?;
    let reply = client
        .interact(&sid, "Hello, I am John.", Some(json!({"user_id": "john"})))
        .await?;
    println!("interact: {}", reply.response);
    let mut text = String::new();
    let mut events = client.stream_response(&sid, "Tell me more.", None).await?;
    while let Some(event) = events.next().await {
        if let StreamEvent::Delta(delta) = event? {
            text.push_str(&delta.text);
        }
    }
    println!("stream: {text}");
    let mut conv = client.converse(ConverseOptions::new(&sid)).await?;
    conv.set_tool_handler(|call| {
        let args = context_json(call.arguments.as_ref()).map_err(|e| e.to_string())?;
        Ok(format!("sunny in {}", args["city"].as_str().unwrap_or("?")))
    });
    let done = conv
        .turn(r#"/call get_weather {"city": "Paris"}"#, None)
        .await?;
    println!("converse: {}", done.response);
    if let Err(error) = client.get_session("no-such-session").await {
        println!("error: {}", contextd::client::code_name(error.code()));
    }
    Ok(())
}
