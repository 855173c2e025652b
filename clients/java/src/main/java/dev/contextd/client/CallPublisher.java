package dev.contextd.client;

import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.StreamObserver;
import java.util.concurrent.Flow;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BiConsumer;
import java.util.function.Function;

/**
 * One server-streaming call of the async stub as a {@link Flow.Publisher}. The call starts when
 * the publisher is subscribed, once: a second subscriber gets {@link IllegalStateException}, so
 * that subscribing twice never runs a turn twice. The subscriber's demand is the call's flow
 * control (nothing is read from the wire before it is asked for) and cancelling the subscription
 * cancels the RPC.
 *
 * @param <Q> the request message
 * @param <R> the response message
 * @param <T> what the subscriber receives; responses the conversion maps to null are skipped
 */
final class CallPublisher<Q, R, T> implements Flow.Publisher<T> {
  private final BiConsumer<Q, StreamObserver<R>> start;
  private final Q request;
  private final Function<R, T> convert;
  private final AtomicBoolean subscribed = new AtomicBoolean();

  CallPublisher(BiConsumer<Q, StreamObserver<R>> start, Q request, Function<R, T> convert) {
    this.start = start;
    this.request = request;
    this.convert = convert;
  }

  @Override
  public void subscribe(Flow.Subscriber<? super T> subscriber) {
    if (!subscribed.compareAndSet(false, true)) {
      subscriber.onSubscribe(Refused.INSTANCE);
      subscriber.onError(new IllegalStateException("this publisher runs one call and has been subscribed already"));
      return;
    }
    new Call(subscriber).begin();
  }

  /** The subscription a second subscriber gets: nothing to request or cancel. */
  private enum Refused implements Flow.Subscription {
    INSTANCE;

    @Override
    public void request(long n) {}

    @Override
    public void cancel() {}
  }

  /** The subscription and the call's observer in one. */
  private final class Call implements Flow.Subscription, ClientResponseObserver<Q, R> {
    private final Flow.Subscriber<? super T> subscriber;
    // The wire side, set by beforeStart; its request and cancel may be called from any thread.
    private volatile ClientCallStreamObserver<Q> wire;
    // Demand asked for before the call started, handed on when it has (request() before start
    // throws). Guarded by this; so are started and cancelled.
    private long early;
    private boolean started;
    private boolean cancelled;
    // Whether a terminal signal went out (or the subscriber cancelled): later ones are dropped.
    // Written by the one thread gRPC delivers on, or by cancel/request, each before it signals.
    private volatile boolean done;

    Call(Flow.Subscriber<? super T> subscriber) {
      this.subscriber = subscriber;
    }

    void begin() {
      // onSubscribe first, so that an error of a call that fails at once comes after it.
      subscriber.onSubscribe(this);
      synchronized (this) {
        if (cancelled) {
          return;
        }
      }
      start.accept(request, this);
      synchronized (this) {
        started = true;
        if (cancelled) {
          wire.cancel("cancelled by the subscriber", null);
        } else if (early > 0) {
          wire.request(clamp(early));
        }
      }
    }

    @Override
    public void beforeStart(ClientCallStreamObserver<Q> requestStream) {
      requestStream.disableAutoRequestWithInitial(0);
      wire = requestStream;
    }

    @Override
    public void request(long n) {
      if (n <= 0) {
        cancel();
        subscriber.onError(new IllegalArgumentException("Flow.Subscription.request needs a positive count, got " + n));
        return;
      }
      synchronized (this) {
        if (cancelled) {
          return;
        }
        if (!started) {
          early = early + n < 0 ? Long.MAX_VALUE : early + n;
          return;
        }
      }
      wire.request(clamp(n));
    }

    @Override
    public void cancel() {
      synchronized (this) {
        if (cancelled) {
          return;
        }
        cancelled = true;
        done = true;
        if (!started) {
          return;
        }
      }
      wire.cancel("cancelled by the subscriber", null);
    }

    @Override
    public void onNext(R response) {
      if (done) {
        return;
      }
      T item;
      try {
        item = convert.apply(response);
      } catch (RuntimeException e) {
        cancel();
        subscriber.onError(e);
        return;
      }
      if (item == null) {
        wire.request(1); // skipped: its unit of demand goes to the next response
        return;
      }
      subscriber.onNext(item);
    }

    @Override
    public void onError(Throwable t) {
      if (done) {
        return;
      }
      done = true;
      subscriber.onError(t); // a StatusRuntimeException, as the blocking API throws
    }

    @Override
    public void onCompleted() {
      if (done) {
        return;
      }
      done = true;
      subscriber.onComplete();
    }
  }

  /** gRPC counts demand in ints: a larger demand is as good as unbounded. */
  private static int clamp(long n) {
    return (int) Math.min(n, Integer.MAX_VALUE);
  }
}
