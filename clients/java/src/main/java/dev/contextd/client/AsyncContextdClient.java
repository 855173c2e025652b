package dev.contextd.client;

import contextd.v1.Admin.ApiKey;
import contextd.v1.Admin.CreateKeyResponse;
import contextd.v1.Admin.DeleteTenantRequest;
import contextd.v1.Admin.DeleteTenantResponse;
import contextd.v1.Admin.ExportTenantRequest;
import contextd.v1.Admin.ExportTenantResponse;
import contextd.v1.Admin.KeyRole;
import contextd.v1.Admin.ListKeysRequest;
import contextd.v1.Admin.ListKeysResponse;
import contextd.v1.Admin.ListTenantsRequest;
import contextd.v1.Admin.ListTenantsResponse;
import contextd.v1.Admin.RevokeKeyRequest;
import contextd.v1.Admin.TenantUsage;
import contextd.v1.AdminServiceGrpc;
import contextd.v1.InteractServiceGrpc;
import contextd.v1.Model.ListModelsRequest;
import contextd.v1.Model.ListModelsResponse;
import contextd.v1.ModelServiceGrpc;
import contextd.v1.Session.DeleteSessionRequest;
import contextd.v1.Session.GetSessionRequest;
import contextd.v1.Session.ListMessagesRequest;
import contextd.v1.Session.ListSessionsRequest;
import contextd.v1.Session.PreviewContextResponse;
import contextd.v1.SessionServiceGrpc;
import contextd.v1.Tool.ListToolsRequest;
import contextd.v1.ToolServiceGrpc;
import io.grpc.Channel;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Flow;
import java.util.function.BiConsumer;
import java.util.function.Function;

/**
 * The calls of {@link ContextdClient} without blocking, on the same connection (get it with
 * {@link ContextdClient#async()}). Unary calls return {@link CompletableFuture}s, server streams
 * {@link Flow.Publisher}s, Converse an {@link AsyncConversation}; all are built on grpc-java's
 * async stubs.
 *
 * <ul>
 *   <li>A future completes on a gRPC thread; a failure is the {@link io.grpc.StatusRuntimeException}
 *       the blocking call would throw ({@code join()} wraps it in a
 *       {@link java.util.concurrent.CompletionException}). {@code cancel} cancels the RPC. Cancel
 *       the future itself: a future derived with {@code thenApply} does not pass it back.</li>
 *   <li>A publisher starts its call when subscribed, and only once. Nothing is read from the wire
 *       before the subscriber asks for it, and cancelling the subscription cancels the RPC: for
 *       {@link #streamResponse} that cancels the turn on the server, as closing the blocking
 *       {@link EventStream} does, so nothing of it is stored.</li>
 * </ul>
 */
public final class AsyncContextdClient {
  private final SessionServiceGrpc.SessionServiceStub sessions;
  private final InteractServiceGrpc.InteractServiceStub turns;
  private final ToolServiceGrpc.ToolServiceStub tools;
  private final ModelServiceGrpc.ModelServiceStub models;
  private final AdminServiceGrpc.AdminServiceStub admin;

  AsyncContextdClient(Channel channel) {
    this.sessions = SessionServiceGrpc.newStub(channel);
    this.turns = InteractServiceGrpc.newStub(channel);
    this.tools = ToolServiceGrpc.newStub(channel);
    this.models = ModelServiceGrpc.newStub(channel);
    this.admin = AdminServiceGrpc.newStub(channel);
  }

  private static <Q, R, T> CompletableFuture<T> unary(BiConsumer<Q, StreamObserver<R>> call, Q request, Function<R, T> convert) {
    CallFuture<Q, R, T> future = new CallFuture<>(convert);
    call.accept(request, future);
    return future;
  }

  // Sessions.

  /** {@link ContextdClient#createSession}: the created session. */
  public CompletableFuture<Session> createSession(SessionOptions options) {
    return unary(sessions::createSession, ContextdClient.createSessionRequest(options), r -> Session.fromWire(r.getSession()));
  }

  /** {@link ContextdClient#getSession}: the session, or {@code NOT_FOUND}. */
  public CompletableFuture<Session> getSession(String id) {
    return unary(sessions::getSession, GetSessionRequest.newBuilder().setSessionId(id).build(), r -> Session.fromWire(r.getSession()));
  }

  /** {@link ContextdClient#listSessions}: one page of sessions ordered by id. */
  public CompletableFuture<SessionPage> listSessions(int pageSize, String pageToken) {
    ListSessionsRequest request = ListSessionsRequest.newBuilder().setPageSize(pageSize).setPageToken(ContextdClient.orEmpty(pageToken)).build();
    return unary(sessions::listSessions, request,
        r -> new SessionPage(r.getSessionsList().stream().map(Session::fromWire).toList(), r.getNextPageToken()));
  }

  /** {@link ContextdClient#updateSession}: the session as it is afterwards. */
  public CompletableFuture<Session> updateSession(String id, SessionUpdate update) {
    return unary(sessions::updateSession, ContextdClient.updateSessionRequest(id, update), r -> Session.fromWire(r.getSession()));
  }

  /** {@link ContextdClient#deleteSession(String)}: how many messages went with the session. */
  public CompletableFuture<Long> deleteSession(String id) {
    return deleteSession(id, "");
  }

  /** {@link ContextdClient#deleteSession(String, String)}: deletes only while the etag holds. */
  public CompletableFuture<Long> deleteSession(String id, String etag) {
    DeleteSessionRequest request = DeleteSessionRequest.newBuilder().setSessionId(id).setEtag(ContextdClient.orEmpty(etag)).build();
    return unary(sessions::deleteSession, request, r -> r.getDeletedMessages());
  }

  /** {@link ContextdClient#listMessages(String, int, String)}: one page of history, oldest first. */
  public CompletableFuture<MessagePage> listMessages(String id, int pageSize, String pageToken) {
    ListMessagesRequest request =
        ListMessagesRequest.newBuilder().setSessionId(id).setPageSize(pageSize).setPageToken(ContextdClient.orEmpty(pageToken)).build();
    return unary(sessions::listMessages, request,
        r -> new MessagePage(r.getMessagesList().stream().map(Message::fromWire).toList(), r.getNextPageToken()));
  }

  /** {@link ContextdClient#previewContext}: the window the model would see. */
  public CompletableFuture<PreviewContextResponse> previewContext(String id, String message, Map<String, ?> patch) {
    return previewContext(id, message, patch, false);
  }

  /** {@link ContextdClient#previewContext(String, String, Map, boolean)}, as a future. */
  public CompletableFuture<PreviewContextResponse> previewContext(
      String id, String message, Map<String, ?> patch, boolean summarize) {
    return unary(sessions::previewContext, ContextdClient.previewContextRequest(id, message, patch, summarize), Function.identity());
  }

  // Turns.

  /** {@link ContextdClient#interact}: the turn's outcome. Cancelling the future cancels the turn. */
  public CompletableFuture<Reply> interact(Turn turn) {
    return unary(turns::interact, ContextdClient.interactRequest(turn), Reply::fromWire);
  }

  /**
   * {@link ContextdClient#streamResponse}: the turn's events, {@link Event.Completed} last. The
   * turn is sent when the publisher is subscribed; cancelling the subscription cancels it.
   */
  public Flow.Publisher<Event> streamResponse(Turn turn) {
    return new CallPublisher<>(turns::streamResponse, ContextdClient.streamResponseRequest(turn), Event::fromWire);
  }

  /**
   * {@link ContextdClient#converse}: opens a Converse stream and completes once it is attached.
   * The conversation reads its stream on a thread of its own, which closing it ends.
   */
  public CompletableFuture<AsyncConversation> converse(SessionOptions open, ToolHandler handler) {
    ExecutorService reader = Executors.newSingleThreadExecutor(r -> {
      Thread t = new Thread(r, "contextd-converse-" + open.id);
      t.setDaemon(true);
      return t;
    });
    CompletableFuture<AsyncConversation> attached = CompletableFuture.supplyAsync(
        () -> new AsyncConversation(Conversation.start(turns, open, handler), reader), reader);
    attached.whenComplete((conversation, error) -> {
      if (error != null) {
        reader.shutdown();
      }
    });
    return attached;
  }

  // Models and tools.

  /** {@link ContextdClient#listModels}. */
  public CompletableFuture<ListModelsResponse> listModels() {
    return unary(models::listModels, ListModelsRequest.getDefaultInstance(), Function.identity());
  }

  /** {@link ContextdClient#listTools}: server-side tools and, for a session id, that session's. */
  public CompletableFuture<ToolList> listTools(String sessionId) {
    return unary(tools::listTools, ListToolsRequest.newBuilder().setSessionId(ContextdClient.orEmpty(sessionId)).build(), ContextdClient::toolList);
  }

  /** {@link ContextdClient#callTool(String, Map)}: runs a server-side tool that needs no session. */
  public CompletableFuture<ToolOutput> callTool(String name, Map<String, ?> arguments) {
    return callTool(name, arguments, "");
  }

  /** {@link ContextdClient#callTool(String, Map, String)}: runs a server-side tool on a session. */
  public CompletableFuture<ToolOutput> callTool(String name, Map<String, ?> arguments, String sessionId) {
    return unary(tools::callTool, ContextdClient.callToolRequest(name, arguments, sessionId), ContextdClient::toolOutput);
  }

  // Keys and tenants.

  /** {@link ContextdClient#createKey(String)}: a user key that works until revoked. */
  public CompletableFuture<CreateKeyResponse> createKey(String tenantId) {
    return createKey(tenantId, KeyRole.KEY_ROLE_USER, "", null);
  }

  /** {@link ContextdClient#createKey(String, KeyRole, String, Duration)}: the key and its secret. */
  public CompletableFuture<CreateKeyResponse> createKey(String tenantId, KeyRole role, String label, Duration ttl) {
    return unary(admin::createKey, ContextdClient.createKeyRequest(tenantId, role, label, ttl), Function.identity());
  }

  /** {@link ContextdClient#listKeys}: keys (never their secrets) of one tenant, or of all. */
  public CompletableFuture<List<ApiKey>> listKeys(String tenantId) {
    return unary(admin::listKeys, ListKeysRequest.newBuilder().setTenantId(ContextdClient.orEmpty(tenantId)).build(),
        ListKeysResponse::getKeysList);
  }

  /** {@link ContextdClient#revokeKey}: the key, revoked. */
  public CompletableFuture<ApiKey> revokeKey(String keyId) {
    return unary(admin::revokeKey, RevokeKeyRequest.newBuilder().setKeyId(ContextdClient.orEmpty(keyId)).build(), r -> r.getKey());
  }

  /** {@link ContextdClient#listTenants}: tenants with what they store. */
  public CompletableFuture<List<TenantUsage>> listTenants() {
    return unary(admin::listTenants, ListTenantsRequest.getDefaultInstance(), ListTenantsResponse::getTenantsList);
  }

  /**
   * {@link ContextdClient#exportTenant}: each session followed by its history. Cancelling the
   * subscription cancels the export.
   */
  public Flow.Publisher<ExportTenantResponse> exportTenant(String tenantId) {
    return new CallPublisher<>(admin::exportTenant, ExportTenantRequest.newBuilder().setTenantId(ContextdClient.orEmpty(tenantId)).build(),
        Function.identity());
  }

  /** {@link ContextdClient#deleteTenant}: the counts of what went. */
  public CompletableFuture<DeleteTenantResponse> deleteTenant(String tenantId) {
    return unary(admin::deleteTenant, DeleteTenantRequest.newBuilder().setTenantId(ContextdClient.orEmpty(tenantId)).build(),
        Function.identity());
  }
}
