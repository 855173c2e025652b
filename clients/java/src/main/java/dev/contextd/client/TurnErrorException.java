package dev.contextd.client;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;

/**
 * A frame the server refused on a Converse stream (bad input, a failed turn). The stream stays
 * usable. It is a {@link StatusRuntimeException}, so {@code getStatus().getCode()} and
 * {@link Status#fromThrowable} give the server's code.
 */
public final class TurnErrorException extends StatusRuntimeException {
  private static final long serialVersionUID = 1L;

  private final String turnId;

  TurnErrorException(String turnId, int code, String message) {
    super(Status.fromCodeValue(code).withDescription(message));
    this.turnId = turnId;
  }

  /** The turn the error belongs to; empty for errors outside a turn. */
  public String turnId() {
    return turnId;
  }
}
