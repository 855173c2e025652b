//! `contextd chat`: an interactive terminal chat over one `Converse` stream.
//!
//! Lines typed are user messages; the reply is printed token by token as it arrives. Tool
//! calls are shown as they happen; when the model asks for a client-side tool the chat asks
//! for its result (a line starting with `!` reports a failure). Commands: `/context`,
//! `/history`, `/preview`, `/help`, `/quit`; the echo model's `/call` and `/delay` go to the
//! model, as does any line not starting with `/` (or starting with `//`, sent with one `/`
//! less); any other `/word` is refused with the list of commands. Ctrl-C cancels a running
//! turn; at a tool-result prompt it abandons the pending calls (each gets the error result
//! "cancelled by the client") and returns to the prompt; at the prompt it drops the line typed
//! so far, and a second Ctrl-C in a row (or Ctrl-D) quits. Colours are used only when the output is a terminal and `NO_COLOR` is not
//! set.

use std::io::Write;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, Lines};

use crate::api::v1;
use crate::client::{
    Client, Conversation, ConverseEvent, ConverseOptions, Error, code_name, context_json,
    tool_definition, tool_error, tool_result,
};

/// What `contextd chat` connects to and how it looks.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// The server, `host:port` or `http://host:port`.
    pub target: String,
    /// The session to attach to (created when missing); `None`: a new `chat-<random>` one.
    pub session_id: Option<String>,
    /// The model for a new session; `None`: the server's default.
    pub model: Option<String>,
    /// Client-side tools to declare on a new session; the user answers their calls.
    pub tools: Vec<String>,
    /// Use ANSI colours.
    pub colour: bool,
    /// The input is a terminal: print a prompt before each line is read, and read the lines
    /// from stdin (the `input` given to [`run`] is then not used).
    pub prompts: bool,
}

/// Why the chat stopped other than by `/quit` or the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Nothing answers at the target.
    #[error("no contextd at {target} — start one with `contextd serve`")]
    Unreachable {
        /// The target that did not answer.
        target: String,
    },
    /// A call failed in a way the chat cannot carry on from.
    #[error("{0}")]
    Client(#[from] Error),
    /// Reading the input or writing the output failed.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

const HELP: &str = "commands: /context (the session's context), /history (stored messages),
  /preview (what the model would see now), /help, /quit
/call and /delay go to the echo model; any other line is sent to the model
  (start it with // to send a leading /)
Ctrl-C cancels a running turn, abandons the tool calls a result is asked for,
  or drops the line being typed; Ctrl-C twice or Ctrl-D quits";

/// The commands the chat itself answers, listed when an unknown one is typed.
const COMMANDS: &str = "/context, /history, /preview, /help, /quit";

/// Slash words that are the echo model's own commands, sent to the model as they are.
const MODEL_COMMANDS: [&str; 2] = ["/call", "/delay"];

/// One read from the terminal.
enum Input {
    /// A line (without its end).
    Line(String),
    /// Ctrl-C: the line typed so far is dropped.
    Interrupted,
    /// The end of the input (Ctrl-D at a terminal).
    End,
}

/// ANSI styling that is a no-op when colours are off.
#[derive(Debug, Clone, Copy)]
struct Style {
    colour: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn prompt(self, text: &str) -> String {
        self.paint("1;32", text)
    }

    fn assistant(self, text: &str) -> String {
        self.paint("1;36", text)
    }

    fn tool(self, text: &str) -> String {
        self.paint("33", text)
    }

    fn error(self, text: &str) -> String {
        self.paint("31", text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// Ctrl-C, listened to from the start: a SIGINT that arrives while the chat is between two
/// waits is kept for the next one instead of being lost (or, before the first wait, ending
/// the process).
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where lines come from: the reader given to [`run`], or, at a terminal, a thread of its own
/// reading stdin. A read left waiting on tokio's stdin (after Ctrl-C quits) would hold the
/// runtime open at exit; a plain thread ends with the process.
enum LineSource<R> {
    Reader(Lines<R>),
    Terminal(tokio::sync::mpsc::Receiver<std::io::Result<String>>),
}

impl<R: AsyncBufRead + Unpin> LineSource<R> {
    fn terminal() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut line = String::new();
                let read = match std::io::BufRead::read_line(&mut stdin, &mut line) {
                    Ok(0) => return, // the end of the input: the channel closes
                    Ok(_) => Ok(line.trim_end_matches(['\n', '\r']).to_string()),
                    Err(e) => Err(e),
                };
                if tx.blocking_send(read).is_err() {
                    return;
                }
            }
        });
        Self::Terminal(rx)
    }

    /// The next line; `None` at the end of the input. Cancel-safe.
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Self::Reader(lines) => lines.next_line().await,
            Self::Terminal(rx) => rx.recv().await.transpose(),
        }
    }
}

/// One chat: the connection, the stream, the input and the output.
struct Chat<R, W> {
    interrupts: Interrupts,
    client: Client,
    conversation: Conversation,
    input: LineSource<R>,
    out: W,
    style: Style,
    prompts: bool,
}

/// Runs the chat until `/quit`, the end of `input`, or Ctrl-C at the prompt.
pub async fn run<R, W>(options: ChatOptions, input: R, out: W) -> Result<(), ChatError>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    let client = match Client::connect(&options.target).await {
        Ok(client) => client,
        Err(Error::Connect { .. }) => {
            return Err(ChatError::Unreachable {
                target: options.target,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let session_id = options
        .session_id
        .clone()
        .unwrap_or_else(|| format!("chat-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let mut open = ConverseOptions::new(session_id);
    if let Some(model) = &options.model {
        open = open.model(model.clone());
    }
    for name in &options.tools {
        open = open.tool(tool_definition(
            name,
            "A tool the user answers at the terminal.",
            serde_json::json!({"type": "object"}),
        )?);
    }
    let conversation = match client.converse(open).await {
        Ok(conversation) => conversation,
        Err(Error::Status(status)) if status.code() == tonic::Code::Unavailable => {
            return Err(ChatError::Unreachable {
                target: options.target,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut chat = Chat {
        interrupts: Interrupts::listen()?,
        client,
        conversation,
        input: if options.prompts {
            LineSource::terminal()
        } else {
            LineSource::Reader(input.lines())
        },
        out,
        style: Style {
            colour: options.colour,
        },
        prompts: options.prompts,
    };
    chat.greet()?;
    chat.repl().await
}

impl<R, W> Chat<R, W>
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    fn greet(&mut self) -> Result<(), ChatError> {
        let session = self.conversation.session();
        let state = if self.conversation.session_created() {
            "new session"
        } else {
            "session"
        };
        let line = format!(
            "{state} {} · model {} · {} messages · /help lists commands",
            session.session_id, session.model, session.message_count
        );
        writeln!(self.out, "{}", self.style.dim(&line))?;
        Ok(())
    }

    /// Reads one line, printing `prompt` first when prompts are on. A terminal drops the
    /// line typed so far on Ctrl-C itself (the kernel flushes its input on SIGINT).
    async fn read_line(&mut self, prompt: &str) -> Result<Input, ChatError> {
        if self.prompts {
            write!(self.out, "{}", self.style.prompt(prompt))?;
            self.out.flush()?;
        }
        tokio::select! {
            line = self.input.next_line() => match line? {
                Some(line) => Ok(Input::Line(line)),
                None => {
                    if self.prompts {
                        // Ctrl-D leaves the cursor after the prompt: end the line.
                        writeln!(self.out)?;
                    }
                    Ok(Input::End)
                }
            },
            _ = self.interrupts.next() => {
                writeln!(self.out)?;
                Ok(Input::Interrupted)
            }
        }
    }

    async fn repl(&mut self) -> Result<(), ChatError> {
        let mut interrupted = false;
        loop {
            let line = match self.read_line("you> ").await? {
                Input::End => break,
                Input::Interrupted if interrupted => break,
                Input::Interrupted => {
                    interrupted = true;
                    writeln!(
                        self.out,
                        "{}",
                        self.style.dim("(Ctrl-C again or Ctrl-D to quit)")
                    )?;
                    continue;
                }
                Input::Line(line) => line,
            };
            interrupted = false;
            let line = line.trim();
            let word = line.split_whitespace().next().unwrap_or_default();
            match word {
                "" => continue,
                "/quit" | "/exit" => break,
                "/help" => writeln!(self.out, "{}", self.style.dim(HELP))?,
                "/context" => self.show_context().await?,
                "/history" => self.show_history().await?,
                "/preview" => self.show_preview().await?,
                _ if word.starts_with('/')
                    && !word.starts_with("//")
                    && !MODEL_COMMANDS.contains(&word) =>
                {
                    let text = format!(
                        "unknown command {word}; commands: {COMMANDS} (/help explains them)"
                    );
                    writeln!(self.out, "{}", self.style.error(&text))?;
                }
                _ => {
                    let message = line
                        .strip_prefix('/')
                        .filter(|rest| rest.starts_with('/'))
                        .unwrap_or(line);
                    self.conversation.send_message(message, None).await?;
                    self.follow_turn().await?;
                }
            }
            self.out.flush()?;
        }
        self.conversation.close();
        // Drain what is left (nothing, after a finished turn) so the server sees a clean end.
        while self.conversation.next_event().await?.is_some() {}
        Ok(())
    }

    /// Prints a turn's events until it ends, asking for the results of client-side tools.
    async fn follow_turn(&mut self) -> Result<(), ChatError> {
        let mut mid_line = false;
        // Set once the pending calls are abandoned: that ends the turn without a model step,
        // and a further Ctrl-C would only cancel the abandon itself.
        let mut abandoning = false;
        loop {
            let event = tokio::select! {
                event = self.conversation.next_event() => event?,
                _ = self.interrupts.next() => {
                    if !abandoning {
                        self.conversation.cancel().await?;
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                return Err(Error::Protocol("the server ended the conversation".into()).into());
            };
            match event {
                ConverseEvent::Delta(delta) => {
                    if !mid_line {
                        write!(self.out, "{}", self.style.assistant("assistant: "))?;
                        mid_line = true;
                    }
                    write!(self.out, "{}", delta.text)?;
                    self.out.flush()?;
                }
                ConverseEvent::ToolCall(call) => {
                    end_line(&mut self.out, &mut mid_line)?;
                    let line = format!(
                        "tool call {} {} (id {})",
                        call.name,
                        arguments_text(call.arguments.as_ref()),
                        call.tool_call_id
                    );
                    writeln!(self.out, "{}", self.style.tool(&line))?;
                }
                ConverseEvent::ToolResult(ran) => {
                    end_line(&mut self.out, &mut mid_line)?;
                    let name = ran.tool_call.map(|c| c.name).unwrap_or_default();
                    let result = ran.result.unwrap_or_default();
                    let verb = if result.is_error {
                        "failed"
                    } else {
                        "returned"
                    };
                    let line = format!("tool {name} {verb}: {}", result.content);
                    writeln!(self.out, "{}", self.style.tool(&line))?;
                }
                ConverseEvent::Completed(done) => {
                    end_line(&mut self.out, &mut mid_line)?;
                    if done.finish_reason() == v1::FinishReason::ToolCalls {
                        match self.ask_tool_results(&done.tool_calls).await? {
                            Some(results) => self.conversation.send_tool_results(results).await?,
                            None => {
                                let line = "(tool calls abandoned: each gets the error result \"cancelled by the client\")";
                                writeln!(self.out, "{}", self.style.dim(line))?;
                                abandoning = true;
                                self.conversation.cancel().await?;
                            }
                        }
                        continue;
                    }
                    let usage = done.usage.unwrap_or_default();
                    let line = format!(
                        "[{} · {} tokens in, {} out]",
                        finish_text(done.finish_reason()),
                        usage.input_tokens,
                        usage.output_tokens
                    );
                    writeln!(self.out, "{}", self.style.dim(&line))?;
                    return Ok(());
                }
                ConverseEvent::Error(error) => {
                    end_line(&mut self.out, &mut mid_line)?;
                    let line = format!(
                        "error: {}: {}",
                        code_name(tonic::Code::from_i32(error.code)),
                        error.message
                    );
                    writeln!(self.out, "{}", self.style.error(&line))?;
                    return Ok(());
                }
                ConverseEvent::Started(_) | ConverseEvent::Opened(_) => {}
            }
        }
    }

    /// Asks the user for the result of each call; `!text` reports a failed tool, the end of
    /// the input answers every remaining call as failed. `None`: the user pressed Ctrl-C, so
    /// the calls are to be abandoned.
    async fn ask_tool_results(
        &mut self,
        calls: &[v1::ToolCall],
    ) -> Result<Option<Vec<v1::ToolResult>>, ChatError> {
        let mut results = Vec::with_capacity(calls.len());
        for call in calls {
            let question = format!("result of {} ({})", call.name, call.tool_call_id);
            if !self.prompts {
                writeln!(self.out, "{}", self.style.tool(&format!("{question}?")))?;
            }
            let result = match self.read_line(&format!("{question}> ")).await? {
                Input::Line(line) => match line.trim().strip_prefix('!') {
                    Some(failure) => tool_error(call, failure.trim()),
                    None => tool_result(call, line.trim()),
                },
                Input::Interrupted => return Ok(None),
                Input::End => tool_error(call, "the user gave no result"),
            };
            results.push(result);
        }
        Ok(Some(results))
    }

    async fn show_context(&mut self) -> Result<(), ChatError> {
        let session = self
            .client
            .get_session(self.conversation.session_id())
            .await?;
        let context = context_json(session.context.as_ref())?;
        let text = serde_json::to_string_pretty(&context).unwrap_or_else(|_| context.to_string());
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    async fn show_history(&mut self) -> Result<(), ChatError> {
        let messages = self.client.history(self.conversation.session_id()).await?;
        if messages.is_empty() {
            writeln!(self.out, "{}", self.style.dim("(no messages yet)"))?;
        }
        for message in messages {
            let role = role_text(message.role());
            let mut line = format!("#{} {role}: {}", message.index, message.content);
            if message.role() == v1::MessageRole::Tool {
                let status = if message.is_error { " failed" } else { "" };
                line = format!(
                    "#{} tool {}{status} ({}): {}",
                    message.index, message.tool_name, message.tool_call_id, message.content
                );
            }
            for call in &message.tool_calls {
                line.push_str(&format!(
                    "\n    calls {} {} (id {})",
                    call.name,
                    arguments_text(call.arguments.as_ref()),
                    call.tool_call_id
                ));
            }
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }

    async fn show_preview(&mut self) -> Result<(), ChatError> {
        let preview = self
            .client
            .preview_context(self.conversation.session_id(), "", None)
            .await?;
        for entry in &preview.entries {
            let label = match entry.kind() {
                v1::ContextEntryKind::SystemPrompt => "system prompt".to_string(),
                v1::ContextEntryKind::Context => "context".to_string(),
                v1::ContextEntryKind::UserMessage => "new message".to_string(),
                v1::ContextEntryKind::Summary => "summary".to_string(),
                v1::ContextEntryKind::PendingSummary => "summary to write".to_string(),
                v1::ContextEntryKind::History | v1::ContextEntryKind::Unspecified => {
                    format!(
                        "#{} {}",
                        entry.message_index.unwrap_or_default(),
                        role_text(entry.role())
                    )
                }
            };
            let line = format!("{label} ({} tokens): {}", entry.token_count, entry.content);
            writeln!(self.out, "{line}")?;
        }
        let summary = format!(
            "{} of {} tokens ({} kept for the reply) · {} older messages left out · model {}",
            preview.total_tokens,
            preview.max_context_tokens,
            preview.reserved_output_tokens,
            preview.omitted_messages,
            preview.model
        );
        writeln!(self.out, "{}", self.style.dim(&summary))?;
        Ok(())
    }
}

fn end_line<W: Write>(out: &mut W, mid_line: &mut bool) -> std::io::Result<()> {
    if std::mem::take(mid_line) {
        writeln!(out)?;
    }
    Ok(())
}

fn arguments_text(arguments: Option<&prost_types::Struct>) -> String {
    context_json(arguments).unwrap_or(Value::Null).to_string()
}

fn role_text(role: v1::MessageRole) -> &'static str {
    match role {
        v1::MessageRole::User => "user",
        v1::MessageRole::Assistant => "assistant",
        v1::MessageRole::Tool => "tool",
        v1::MessageRole::Unspecified => "?",
    }
}

fn finish_text(reason: v1::FinishReason) -> &'static str {
    match reason {
        v1::FinishReason::Stop => "done",
        v1::FinishReason::ToolCalls => "waiting for tools",
        v1::FinishReason::Length => "stopped at the output limit",
        v1::FinishReason::Cancelled => "cancelled",
        v1::FinishReason::StepLimit => "stopped at the tool step limit",
        v1::FinishReason::Unspecified => "ended",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_when_asked() {
        let plain = Style { colour: false };
        assert_eq!(plain.error("x"), "x");
        let coloured = Style { colour: true };
        assert_eq!(coloured.error("x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn unreachable_message() {
        let error = ChatError::Unreachable {
            target: "127.0.0.1:61900".into(),
        };
        assert_eq!(
            error.to_string(),
            "no contextd at 127.0.0.1:61900 — start one with `contextd serve`"
        );
    }
}
