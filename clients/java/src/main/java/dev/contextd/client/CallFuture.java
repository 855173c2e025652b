package dev.contextd.client;

import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.concurrent.CompletableFuture;
import java.util.function.Function;

/**
 * One unary call of the async stub as a {@link CompletableFuture}. It is the call's response
 * observer too, so that it holds the call and cancelling the future cancels the RPC (a plain
 * future adapter would only stop waiting for it).
 *
 * @param <Q> the request message
 * @param <R> the response message
 * @param <T> what the future completes with, made from the response
 */
final class CallFuture<Q, R, T> extends CompletableFuture<T> implements ClientResponseObserver<Q, R> {
  private final Function<R, T> convert;
  // Set by beforeStart, which the stub runs before it returns this future to anyone.
  private volatile ClientCallStreamObserver<Q> call;

  CallFuture(Function<R, T> convert) {
    this.convert = convert;
  }

  @Override
  public void beforeStart(ClientCallStreamObserver<Q> requestStream) {
    call = requestStream;
  }

  @Override
  public void onNext(R response) {
    try {
      complete(convert.apply(response));
    } catch (RuntimeException e) {
      completeExceptionally(e);
    }
  }

  @Override
  public void onError(Throwable t) {
    completeExceptionally(t);
  }

  @Override
  public void onCompleted() {
    // A unary call that ends without a response breaks the protocol; grpc-java reports that as
    // an error already, so this only covers the impossible case without leaving the future open.
    completeExceptionally(io.grpc.Status.INTERNAL.withDescription("the call ended without a response").asRuntimeException());
  }

  /** Cancels the RPC too (the server sees CANCELLED); the flag is ignored, as by every CompletableFuture. */
  @Override
  public boolean cancel(boolean mayInterruptIfRunning) {
    boolean cancelled = super.cancel(mayInterruptIfRunning);
    ClientCallStreamObserver<Q> c = call;
    if (cancelled && c != null) {
      c.cancel("cancelled by the caller", null);
    }
    return cancelled;
  }
}
