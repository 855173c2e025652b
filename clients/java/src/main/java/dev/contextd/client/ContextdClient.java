package dev.contextd.client;

import contextd.v1.Admin.ApiKey;
import contextd.v1.Admin.CreateKeyRequest;
import contextd.v1.Admin.CreateKeyResponse;
import contextd.v1.Admin.DeleteTenantRequest;
import contextd.v1.Admin.DeleteTenantResponse;
import contextd.v1.Admin.ExportTenantRequest;
import contextd.v1.Admin.ExportTenantResponse;
import contextd.v1.Admin.KeyRole;
import contextd.v1.Admin.ListKeysRequest;
import contextd.v1.Admin.ListTenantsRequest;
import contextd.v1.Admin.RevokeKeyRequest;
import contextd.v1.Admin.TenantUsage;
import contextd.v1.AdminServiceGrpc;
import contextd.v1.Common.ServerToolSelection;
import contextd.v1.Interact.ConverseOpen;
import contextd.v1.Interact.InteractRequest;
import contextd.v1.Interact.StreamResponseRequest;
import contextd.v1.Interact.StreamResponseResponse;
import contextd.v1.InteractServiceGrpc;
import com.google.protobuf.Timestamp;
import contextd.v1.Model.ListModelsRequest;
import contextd.v1.Model.ListModelsResponse;
import contextd.v1.ModelServiceGrpc;
import contextd.v1.Session.CreateSessionRequest;
import contextd.v1.Session.DeleteSessionRequest;
import contextd.v1.Session.GetSessionRequest;
import contextd.v1.Session.ListMessagesRequest;
import contextd.v1.Session.ListMessagesResponse;
import contextd.v1.Session.ListSessionsRequest;
import contextd.v1.Session.ListSessionsResponse;
import contextd.v1.Session.PreviewContextRequest;
import contextd.v1.Session.PreviewContextResponse;
import contextd.v1.Session.ToolDefinitionList;
import contextd.v1.Session.UpdateSessionRequest;
import contextd.v1.SessionServiceGrpc;
import contextd.v1.Tool.CallToolRequest;
import contextd.v1.Tool.CallToolResponse;
import contextd.v1.Tool.ListToolsRequest;
import contextd.v1.Tool.ListToolsResponse;
import contextd.v1.ToolServiceGrpc;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientInterceptors;
import io.grpc.Context;
import io.grpc.ForwardingClientCall;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.TlsChannelCredentials;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Spliterator;
import java.util.Spliterators;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;

/**
 * A client for one contextd server: sessions, turns (unary, streamed, bidirectional with tool
 * handling) and server-side tools. Thread-safe; close it to release the connection.
 *
 * <pre>{@code
 * try (ContextdClient client = ContextdClient.builder("127.0.0.1:61900").build()) {
 *   Reply reply = client.interact(Turn.of("session_alpha", "Hello, I am John.", Map.of("user_id", "john_doe")));
 *   System.out.println(reply.text() + " " + reply.context());
 * }
 * }</pre>
 *
 * <p>Failures are {@link io.grpc.StatusRuntimeException}s carrying the server's status code
 * ({@code NOT_FOUND}, {@code INVALID_ARGUMENT}, ...).
 */
public final class ContextdClient implements AutoCloseable {
  private static final Metadata.Key<String> AUTHORIZATION = Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final ManagedChannel owned;
  private final Channel channel;
  private final SessionServiceGrpc.SessionServiceBlockingStub sessions;
  private final InteractServiceGrpc.InteractServiceBlockingStub turns;
  private final InteractServiceGrpc.InteractServiceStub turnsAsync;
  private final ToolServiceGrpc.ToolServiceBlockingStub tools;
  private final ModelServiceGrpc.ModelServiceBlockingStub models;
  private final AdminServiceGrpc.AdminServiceBlockingStub admin;
  private final AsyncContextdClient async;

  private ContextdClient(ManagedChannel owned, Channel channel) {
    this.owned = owned;
    this.channel = channel;
    this.sessions = SessionServiceGrpc.newBlockingStub(channel);
    this.turns = InteractServiceGrpc.newBlockingStub(channel);
    this.turnsAsync = InteractServiceGrpc.newStub(channel);
    this.tools = ToolServiceGrpc.newBlockingStub(channel);
    this.models = ModelServiceGrpc.newBlockingStub(channel);
    this.admin = AdminServiceGrpc.newBlockingStub(channel);
    this.async = new AsyncContextdClient(channel);
  }

  /** Starts building a client for {@code target} ("host:port" or any gRPC target string). */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  /** Builds a {@link ContextdClient}. */
  public static final class Builder {
    private final String target;
    private ChannelCredentials credentials = InsecureChannelCredentials.create();
    private String bearerToken;
    private Duration callTimeout;
    private Channel channel;
    private byte[] caPem;
    private byte[] clientCertPem;
    private byte[] clientKeyPem;
    private String serverName;

    private Builder(String target) {
      this.target = target;
    }

    /** Connects over TLS, trusting the system's roots. Default: plaintext. */
    public Builder tls() {
      this.credentials = TlsChannelCredentials.create();
      return this;
    }

    /** Connects over TLS, trusting only the CA certificates in this PEM (for the server's certificate). */
    public Builder tlsCa(byte[] caPem) {
      this.caPem = caPem.clone();
      return this;
    }

    /** Connects over TLS, trusting only the CA certificates in this PEM file. */
    public Builder tlsCa(Path caPemFile) {
      return tlsCa(read("CA file", caPemFile));
    }

    /**
     * Shows this client certificate chain and PKCS#8 private key (PEM) to servers that require
     * client certificates (mTLS, {@code contextd serve --tls-client-ca}). Implies TLS.
     */
    public Builder clientCertificate(byte[] certPem, byte[] keyPem) {
      this.clientCertPem = certPem.clone();
      this.clientKeyPem = keyPem.clone();
      return this;
    }

    /** {@link #clientCertificate(byte[], byte[])} with both read from PEM files. */
    public Builder clientCertificate(Path certPemFile, Path keyPemFile) {
      return clientCertificate(read("client certificate file", certPemFile), read("client key file", keyPemFile));
    }

    /** The name the server's certificate must carry, when it is not the target's host. */
    public Builder serverName(String name) {
      this.serverName = name;
      return this;
    }

    private static byte[] read(String what, Path path) {
      try {
        return Files.readAllBytes(path);
      } catch (IOException e) {
        throw new UncheckedIOException("cannot read the " + what + " " + path + ": " + e.getMessage(), e);
      }
    }

    /** The TLS credentials the PEM options make; null when none was given. */
    private ChannelCredentials tlsCredentials() {
      if (caPem == null && clientCertPem == null) {
        return null;
      }
      try {
        TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder();
        if (caPem != null) {
          tls.trustManager(new ByteArrayInputStream(caPem));
        }
        if (clientCertPem != null) {
          tls.keyManager(new ByteArrayInputStream(clientCertPem), new ByteArrayInputStream(clientKeyPem));
        }
        return tls.build();
      } catch (IOException e) {
        throw new IllegalArgumentException("the TLS certificates cannot be used: " + e.getMessage(), e);
      }
    }

    /**
     * Connects with these credentials, for example {@code TlsChannelCredentials.newBuilder()
     * .trustManager(caPemFile).build()}.
     */
    public Builder credentials(ChannelCredentials credentials) {
      this.credentials = credentials;
      return this;
    }

    /**
     * Sends the API key ({@code ctxd_…}) as {@code authorization: Bearer <token>} with every
     * call, as a server started with {@code --auth keys} requires.
     */
    public Builder bearerToken(String token) {
      this.bearerToken = token;
      return this;
    }

    /**
     * Gives every unary and server-streaming call this deadline (Converse streams live as long
     * as they are used); a call past it fails with {@code DEADLINE_EXCEEDED}.
     */
    public Builder callTimeout(Duration timeout) {
      this.callTimeout = timeout;
      return this;
    }

    /** Uses an existing channel (the caller closes it) instead of making one. */
    public Builder channel(Channel channel) {
      this.channel = channel;
      return this;
    }

    /** Creates the client. The connection is made on the first call. */
    public ContextdClient build() {
      ManagedChannel owned = null;
      Channel ch = channel;
      if (ch == null) {
        ChannelCredentials tls = tlsCredentials();
        ManagedChannelBuilder<?> builder = Grpc.newChannelBuilder(target, tls != null ? tls : credentials);
        if (serverName != null) {
          builder.overrideAuthority(serverName);
        }
        owned = builder.build();
        ch = owned;
      }
      if (bearerToken != null) {
        ch = ClientInterceptors.intercept(ch, bearer(bearerToken));
      }
      if (callTimeout != null) {
        ch = ClientInterceptors.intercept(ch, deadline(callTimeout));
      }
      return new ContextdClient(owned, ch);
    }
  }

  /**
   * Adds the authorization header in an interceptor rather than call credentials, so that it
   * also travels on plaintext loopback connections.
   */
  private static ClientInterceptor bearer(String token) {
    String value = "Bearer " + token;
    return new ClientInterceptor() {
      @Override
      public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
        return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
          @Override
          public void start(Listener<R> listener, Metadata headers) {
            headers.put(AUTHORIZATION, value);
            super.start(listener, headers);
          }
        };
      }
    };
  }

  private static ClientInterceptor deadline(Duration timeout) {
    return new ClientInterceptor() {
      @Override
      public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
        if (options.getDeadline() == null && method.getType() != MethodDescriptor.MethodType.BIDI_STREAMING) {
          options = options.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
        }
        return next.newCall(method, options);
      }
    };
  }

  /**
   * The same calls without blocking, on this client's connection: futures for unary calls,
   * {@link java.util.concurrent.Flow.Publisher}s for streams (see {@link AsyncContextdClient}).
   */
  public AsyncContextdClient async() {
    return async;
  }

  /** The channel calls go through (with the bearer token, if any), for other stubs. */
  public Channel channel() {
    return channel;
  }

  /** The generated blocking stub of {@code contextd.v1.SessionService}. */
  public SessionServiceGrpc.SessionServiceBlockingStub sessionService() {
    return sessions;
  }

  /** The generated blocking stub of {@code contextd.v1.InteractService}. */
  public InteractServiceGrpc.InteractServiceBlockingStub interactService() {
    return turns;
  }

  /** The generated blocking stub of {@code contextd.v1.ToolService}. */
  public ToolServiceGrpc.ToolServiceBlockingStub toolService() {
    return tools;
  }

  /** The generated blocking stub of {@code contextd.v1.AdminService}. */
  public AdminServiceGrpc.AdminServiceBlockingStub adminService() {
    return admin;
  }

  // Sessions.

  /** Creates a session; {@code ALREADY_EXISTS} when the id is taken. */
  public Session createSession(SessionOptions o) {
    return Session.fromWire(sessions.createSession(createSessionRequest(o)).getSession());
  }

  static CreateSessionRequest createSessionRequest(SessionOptions o) {
    CreateSessionRequest.Builder b = CreateSessionRequest.newBuilder()
        .setSessionId(o.id)
        .setSystemPrompt(o.systemPrompt)
        .setModel(o.model)
        .putAllLabels(o.labels)
        .setMaxContextTokens(o.maxContextTokens);
    if (o.context != null) {
      b.setContext(Values.toStruct(o.context));
    }
    if (o.expireTime != null) {
      b.setExpireTime(timestamp(o.expireTime));
    }
    if (o.window != null) {
      b.setWindow(o.window);
    }
    if (o.serverTools != null) {
      b.setServerTools(ServerToolSelection.newBuilder().addAllPatterns(o.serverTools));
    }
    o.tools.forEach(t -> b.addTools(t.toWire()));
    return b.build();
  }

  /** Returns a session; {@code NOT_FOUND} when it does not exist. */
  public Session getSession(String id) {
    return Session.fromWire(sessions.getSession(GetSessionRequest.newBuilder().setSessionId(id).build()).getSession());
  }

  /** Returns one page of sessions ordered by id (pageSize 0: the server default). */
  public SessionPage listSessions(int pageSize, String pageToken) {
    ListSessionsResponse r = sessions.listSessions(
        ListSessionsRequest.newBuilder().setPageSize(pageSize).setPageToken(pageToken == null ? "" : pageToken).build());
    return new SessionPage(r.getSessionsList().stream().map(Session::fromWire).toList(), r.getNextPageToken());
  }

  /** Every session, fetching pages lazily as the stream is consumed. */
  public Stream<Session> sessions() {
    Iterator<Session> it = new Iterator<>() {
      private Iterator<Session> page = List.<Session>of().iterator();
      private String token = "";
      private boolean last;

      @Override
      public boolean hasNext() {
        while (!page.hasNext() && !last) {
          SessionPage p = listSessions(0, token);
          page = p.sessions().iterator();
          token = p.nextPageToken();
          last = token.isEmpty();
        }
        return page.hasNext();
      }

      @Override
      public Session next() {
        if (!hasNext()) {
          throw new NoSuchElementException();
        }
        return page.next();
      }
    };
    return StreamSupport.stream(Spliterators.spliteratorUnknownSize(it, Spliterator.ORDERED | Spliterator.NONNULL), false);
  }

  /** Changes a session and returns it as it is afterwards. */
  public Session updateSession(String id, SessionUpdate u) {
    return Session.fromWire(sessions.updateSession(updateSessionRequest(id, u)).getSession());
  }

  static UpdateSessionRequest updateSessionRequest(String id, SessionUpdate u) {
    UpdateSessionRequest.Builder b = UpdateSessionRequest.newBuilder()
        .setSessionId(id)
        .putAllLabels(u.labels)
        .addAllRemoveLabels(u.removeLabels);
    if (u.context != null) {
      b.setContext(Values.toStruct(u.context));
    }
    if (u.systemPrompt != null) {
      b.setSystemPrompt(u.systemPrompt);
    }
    if (u.tools != null) {
      ToolDefinitionList.Builder list = ToolDefinitionList.newBuilder();
      u.tools.forEach(t -> list.addTools(t.toWire()));
      b.setTools(list);
    }
    if (u.model != null) {
      b.setModel(u.model);
    }
    if (u.maxContextTokens != null) {
      b.setMaxContextTokens(u.maxContextTokens);
    }
    if (u.etag != null) {
      b.setEtag(u.etag);
    }
    if (u.expireTime != null) {
      b.setExpireTime(timestamp(u.expireTime));
    }
    if (u.window != null) {
      b.setWindow(u.window);
    }
    if (u.serverTools != null) {
      b.setServerTools(ServerToolSelection.newBuilder().addAllPatterns(u.serverTools));
    }
    b.setResetServerTools(u.resetServerTools);
    return b.build();
  }

  /** Deletes a session with its history; returns how many messages went with it. */
  public long deleteSession(String id) {
    return deleteSession(id, "");
  }

  /**
   * Deletes a session only while its etag is still {@code etag} (ABORTED when it changed since it
   * was read; empty: unconditionally); returns how many messages went with it.
   */
  public long deleteSession(String id, String etag) {
    return sessions
        .deleteSession(DeleteSessionRequest.newBuilder().setSessionId(id).setEtag(etag).build())
        .getDeletedMessages();
  }

  /** A session's whole history, oldest first. */
  public List<Message> listMessages(String id) {
    List<Message> out = new ArrayList<>();
    String token = "";
    do {
      ListMessagesResponse r = sessions.listMessages(ListMessagesRequest.newBuilder().setSessionId(id).setPageToken(token).build());
      r.getMessagesList().forEach(m -> out.add(Message.fromWire(m)));
      token = r.getNextPageToken();
    } while (!token.isEmpty());
    return out;
  }

  /** One page of a session's history, oldest first (pageSize 0: the server default). */
  public MessagePage listMessages(String id, int pageSize, String pageToken) {
    ListMessagesResponse r = sessions.listMessages(
        ListMessagesRequest.newBuilder().setSessionId(id).setPageSize(pageSize).setPageToken(orEmpty(pageToken)).build());
    return new MessagePage(r.getMessagesList().stream().map(Message::fromWire).toList(), r.getNextPageToken());
  }

  /** The window the model would see if {@code message} (and the patch) were sent now. */
  public PreviewContextResponse previewContext(String id, String message, Map<String, ?> patch) {
    return previewContext(id, message, patch, false);
  }

  /**
   * {@link #previewContext(String, String, Map)}; with {@code summarize}, a summary the next
   * turn would write first (shown otherwise as a {@code CONTEXT_ENTRY_KIND_PENDING_SUMMARY}
   * entry) is written now by the summarizer model and kept for that turn unless the session
   * changed meanwhile ({@code getSummaryKept()} says which).
   */
  public PreviewContextResponse previewContext(String id, String message, Map<String, ?> patch, boolean summarize) {
    return sessions.previewContext(previewContextRequest(id, message, patch, summarize));
  }

  static PreviewContextRequest previewContextRequest(String id, String message, Map<String, ?> patch, boolean summarize) {
    PreviewContextRequest.Builder b = PreviewContextRequest.newBuilder()
        .setSessionId(id)
        .setMessage(message == null ? "" : message)
        .setSummarize(summarize);
    if (patch != null) {
      b.setContext(Values.toStruct(patch));
    }
    return b.build();
  }

  // Turns.

  /** Runs one turn and returns its outcome. */
  public Reply interact(Turn turn) {
    return Reply.fromWire(turns.interact(interactRequest(turn)));
  }

  static InteractRequest interactRequest(Turn turn) {
    InteractRequest.Builder b = InteractRequest.newBuilder().setSessionId(turn.sessionId()).setMessage(orEmpty(turn.message()));
    if (turn.context() != null) {
      b.setContext(Values.toStruct(turn.context()));
    }
    turn.toolResults().forEach(r -> b.addToolResults(r.toWire()));
    if (turn.idempotencyKey() != null) {
      b.setIdempotencyKey(turn.idempotencyKey());
    }
    b.setAbandonToolCalls(turn.abandonToolCalls());
    return b.build();
  }

  /** Runs one turn and returns its events as they arrive; close it to stop early. */
  public EventStream streamResponse(Turn turn) {
    StreamResponseRequest request = streamResponseRequest(turn);
    Context.CancellableContext call = Context.current().withCancellation();
    Iterator<StreamResponseResponse> responses;
    try {
      responses = call.call(() -> turns.streamResponse(request));
    } catch (RuntimeException e) {
      call.cancel(e);
      throw e;
    } catch (Exception e) {
      call.cancel(e);
      throw new IllegalStateException(e);
    }
    return new EventStream() {
      @Override
      Event read() {
        while (responses.hasNext()) {
          Event e = Event.fromWire(responses.next());
          if (e != null) {
            return e;
          }
        }
        call.cancel(null); // the call is over; release the context
        return null;
      }

      @Override
      public void close() {
        call.cancel(null);
      }
    };
  }

  static StreamResponseRequest streamResponseRequest(Turn turn) {
    StreamResponseRequest.Builder b = StreamResponseRequest.newBuilder().setSessionId(turn.sessionId()).setMessage(orEmpty(turn.message()));
    if (turn.context() != null) {
      b.setContext(Values.toStruct(turn.context()));
    }
    turn.toolResults().forEach(r -> b.addToolResults(r.toWire()));
    if (turn.idempotencyKey() != null) {
      b.setIdempotencyKey(turn.idempotencyKey());
    }
    b.setAbandonToolCalls(turn.abandonToolCalls());
    return b.build();
  }

  /**
   * Opens a Converse stream on the session {@code open} names (created with those options when
   * it does not exist) and waits until it is attached. {@code handler}, when not null, answers
   * every client-side tool call automatically.
   */
  public Conversation converse(SessionOptions open, ToolHandler handler) {
    return Conversation.start(turnsAsync, open, handler);
  }

  static ConverseOpen converseOpen(SessionOptions open) {
    ConverseOpen.Builder b = ConverseOpen.newBuilder()
        .setSessionId(open.id)
        .setSystemPrompt(open.systemPrompt)
        .setModel(open.model)
        .putAllLabels(open.labels)
        .setMaxContextTokens(open.maxContextTokens);
    if (open.context != null) {
      b.setContext(Values.toStruct(open.context));
    }
    if (open.expireTime != null) {
      b.setExpireTime(timestamp(open.expireTime));
    }
    if (open.window != null) {
      b.setWindow(open.window);
    }
    if (open.serverTools != null) {
      b.setServerTools(ServerToolSelection.newBuilder().addAllPatterns(open.serverTools));
    }
    open.tools.forEach(t -> b.addTools(t.toWire()));
    return b.build();
  }

  // Models.

  /** The models sessions may name, the configured provider backends and the default model. */
  public ListModelsResponse listModels() {
    return models.listModels(ListModelsRequest.getDefaultInstance());
  }

  // Tools.

  /** The server-side tools and, when {@code sessionId} is not empty, that session's tools. */
  public ToolList listTools(String sessionId) {
    return toolList(tools.listTools(ListToolsRequest.newBuilder().setSessionId(orEmpty(sessionId)).build()));
  }

  static ToolList toolList(ListToolsResponse r) {
    return new ToolList(
        r.getToolsList().stream().map(Tool::fromWire).toList(),
        r.getSessionToolsList().stream().map(Tool::fromWire).toList(),
        List.copyOf(r.getOfferedToolsList()));
  }

  /** Runs a server-side tool that needs no session; see {@link #callTool(String, Map, String)}. */
  public ToolOutput callTool(String name, Map<String, ?> arguments) {
    return callTool(name, arguments, "");
  }

  /**
   * Runs a server-side tool on a session (the order name, arguments, session is the same in
   * every contextd client); a tool that fails answers {@code isError}.
   */
  public ToolOutput callTool(String name, Map<String, ?> arguments, String sessionId) {
    return toolOutput(tools.callTool(callToolRequest(name, arguments, sessionId)));
  }

  static CallToolRequest callToolRequest(String name, Map<String, ?> arguments, String sessionId) {
    CallToolRequest.Builder b = CallToolRequest.newBuilder().setName(name).setSessionId(orEmpty(sessionId));
    if (arguments != null) {
      b.setArguments(Values.toStruct(arguments));
    }
    return b.build();
  }

  static ToolOutput toolOutput(CallToolResponse r) {
    return new ToolOutput(r.getContent(), r.hasStructuredContent() ? Values.fromValue(r.getStructuredContent()) : null, r.getIsError());
  }

  // Keys and tenants (AdminService: an admin key, or a server with authentication off, where
  // every caller is the admin of tenant "default"). The results are the generated messages.

  /** Makes a user key for {@code tenantId} that works until revoked; see {@link #createKey(String, KeyRole, String, Duration)}. */
  public CreateKeyResponse createKey(String tenantId) {
    return createKey(tenantId, KeyRole.KEY_ROLE_USER, "", null);
  }

  /**
   * Makes an API key for {@code tenantId} with {@code role}, a {@code label} for
   * {@link #listKeys(String)} and, when {@code ttl} is not null, a lifetime. The response's
   * {@code secret} is the key itself, shown only here: pass it to {@link Builder#bearerToken}.
   */
  public CreateKeyResponse createKey(String tenantId, KeyRole role, String label, Duration ttl) {
    return admin.createKey(createKeyRequest(tenantId, role, label, ttl));
  }

  static CreateKeyRequest createKeyRequest(String tenantId, KeyRole role, String label, Duration ttl) {
    CreateKeyRequest.Builder b = CreateKeyRequest.newBuilder().setTenantId(orEmpty(tenantId)).setRole(role).setLabel(orEmpty(label));
    if (ttl != null) {
      b.setTtl(com.google.protobuf.Duration.newBuilder().setSeconds(ttl.getSeconds()).setNanos(ttl.getNano()));
    }
    return b.build();
  }

  /** Keys (never their secrets) of one tenant, or of every tenant when {@code tenantId} is empty or null. */
  public List<ApiKey> listKeys(String tenantId) {
    return admin.listKeys(ListKeysRequest.newBuilder().setTenantId(orEmpty(tenantId)).build()).getKeysList();
  }

  /** Revokes a key by its id (as {@link #listKeys(String)} shows it) and returns it, revoked. */
  public ApiKey revokeKey(String keyId) {
    return admin.revokeKey(RevokeKeyRequest.newBuilder().setKeyId(orEmpty(keyId)).build()).getKey();
  }

  /** Tenants with what they store: every one for an admin, a user key's own otherwise. */
  public List<TenantUsage> listTenants() {
    return admin.listTenants(ListTenantsRequest.getDefaultInstance()).getTenantsList();
  }

  /**
   * All of a tenant's data, as it arrives: each session ({@code hasSession()}), followed by its
   * history oldest first ({@code hasMessage()}). Close the stream (try-with-resources) to stop
   * early: that cancels the call. Errors surface while reading, as
   * {@link io.grpc.StatusRuntimeException}.
   */
  public Stream<ExportTenantResponse> exportTenant(String tenantId) {
    ExportTenantRequest request = ExportTenantRequest.newBuilder().setTenantId(orEmpty(tenantId)).build();
    Context.CancellableContext call = Context.current().withCancellation();
    Iterator<ExportTenantResponse> records;
    try {
      records = call.call(() -> admin.exportTenant(request));
    } catch (RuntimeException e) {
      call.cancel(e);
      throw e;
    } catch (Exception e) {
      call.cancel(e);
      throw new IllegalStateException(e);
    }
    return StreamSupport.stream(Spliterators.spliteratorUnknownSize(records, Spliterator.ORDERED | Spliterator.NONNULL), false)
        .onClose(() -> call.cancel(null));
  }

  /** Deletes all of a tenant's sessions, their histories and its keys; returns the counts. */
  public DeleteTenantResponse deleteTenant(String tenantId) {
    return admin.deleteTenant(DeleteTenantRequest.newBuilder().setTenantId(orEmpty(tenantId)).build());
  }

  /** Closes the connection (when this client made it). */
  @Override
  public void close() {
    if (owned != null) {
      owned.shutdownNow();
      try {
        owned.awaitTermination(5, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
  }

  private static Timestamp timestamp(Instant t) {
    return Timestamp.newBuilder().setSeconds(t.getEpochSecond()).setNanos(t.getNano()).build();
  }

  static String orEmpty(String s) {
    return s == null ? "" : s;
  }
}
